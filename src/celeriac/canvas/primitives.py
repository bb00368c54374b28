"""The workflow primitives: ``chain``, ``group``, ``chord``, ``chunks``, ``xmap``, ``xstarmap``.

Each is a :class:`~celeriac.canvas.signature.Signature` whose parts live in ``kwargs``, so a whole
workflow serializes to plain dicts and travels inside messages. Sending one works in two steps:

1. **freeze**: every node gets its task id (and its place: group id and index) before anything is
   sent, so the result tree (``parent``, ``GroupResult``) is known at once and a worker that later
   sends a node uses the id the caller already holds;
2. **send**: a chain sends its first task carrying the rest in the message (``chain``, Celery's
   layout: last step first); a group saves its member ids in the backend, then sends the members;
   a chord does the same with its header, each header task carrying the body (``chord``) so that
   the worker finishing the last one sends the body (:mod:`celeriac.canvas.flow`).

A chain is normalised before it is frozen: nested chains are flattened, and a group or chord that
is followed by more steps becomes a chord whose body is the rest (``a | group(b, c) | d`` is
``a | chord([b, c], d)``), as in Celery. After that only a chain's last step can be a workflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas.send import send_each
from celeriac.canvas.signature import (
    SUBTASK_TYPES,
    WORKFLOW_OPTIONS,
    Signature,
    maybe_signature,
)
from celeriac.errors import ChordError, ImproperlyConfigured
from celeriac.protocol.message import new_id
from celeriac.results.base import ResultMeta, exception_to_dict

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas.signature import ResultHandle
    from celeriac.results.group import GroupResult

#: The builtin task that hands a group's results on as one value (see ``builtins.py``).
IDENTITY_TASK = "celeriac.identity"

#: Membership options a node takes from its container: they always go to the workflow's final node.
_MEMBERSHIP = ("task_id", "group_id", "group_index", "chord")


def _tasks(tasks: tuple[Any, ...], app: Celeriac | None) -> list[Signature]:
    """Signatures from ``f(a, b)`` or ``f([a, b])`` / ``f(generator)``."""
    one = tasks[0] if len(tasks) == 1 else None
    if isinstance(one, Iterable) and not isinstance(one, Signature | Mapping | str):
        tasks = tuple(one)
    return [maybe_signature(t, app) for t in tasks]


def _app_of(sigs: Sequence[Signature], app: Celeriac | None) -> Celeriac | None:
    if app is not None:
        return app
    return next((s.app for s in sigs if s.app is not None), None)


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send options into (membership of the final node, the rest)."""
    membership = {k: options.pop(k) for k in _MEMBERSHIP if options.get(k) is not None}
    options.pop("chord_size", None)
    return membership, options


def _send_members(
    app: Celeriac,
    members: Sequence[Signature],
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> None:
    """Plain tasks in one batch publish (:mod:`celeriac.canvas.send`); workflows each send."""
    plain = [m for m in members if not isinstance(m, _Workflow)]
    send_each(app, plain, args, kwargs, options)
    for member in members:
        if isinstance(member, _Workflow):
            member.apply_async(args, kwargs, **options)


def _attach(result: ResultHandle, parent: ResultHandle) -> None:
    """Hang ``parent`` above the oldest result ``result`` already follows (a chord's result has
    its header, a chain's last step its earlier steps)."""
    node = result
    while node.parent is not None:
        node = node.parent
    node.parent = parent


def _group_result(result: ResultHandle) -> GroupResult:
    """Narrow the type: a group's send returns a GroupResult."""
    from celeriac.results.group import GroupResult

    assert isinstance(result, GroupResult)
    return result


def _relink(options: dict[str, Any], target: Signature) -> None:
    """Move ``link``/``link_error`` send options onto ``target``'s own (Celery's meaning: a
    chain's callback follows its last step and its errback any step; a chord's go to its body)."""
    for callback in _listed(options.pop("link", None)):
        target.link(callback)
    for errback in _listed(options.pop("link_error", None)):
        target.link_error(errback)


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _own_options(sig: Signature) -> dict[str, Any]:
    """A container's own send options (queue, priority...), without ids and places."""
    return {
        k: v
        for k, v in sig.options.items()
        if k not in WORKFLOW_OPTIONS and k not in ("chord_size", "link", "link_error")
    }


class _Workflow(Signature):
    """What every composite shares: sending works on a copy, so the user's signature is never
    changed and may be sent again (with new ids, unless the user froze it)."""

    __slots__ = ()

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultHandle:
        work = self._copy()
        assert isinstance(work, _Workflow)
        if self._app().conf.task_always_eager:
            return work.apply(args, kwargs)
        return work._send(args, kwargs, **options)

    def _send(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultHandle:
        raise NotImplementedError  # pragma: no cover - each workflow sends itself


class _TaskList(_Workflow):
    """A workflow made of a list of signatures (``kwargs["tasks"]``): chain and group."""

    __slots__ = ()
    kind = ""

    def __init__(self, *tasks: Any, app: Celeriac | None = None, **options: Any) -> None:
        sigs = _tasks(tasks, app)
        super().__init__(
            f"celery.{self.kind}",
            (),
            {"tasks": sigs},
            options,
            subtask_type=self.kind,
            app=_app_of(sigs, app),
        )

    @property
    def tasks(self) -> list[Signature]:
        value: list[Signature] = self.kwargs["tasks"]
        return value

    @classmethod
    def rebuild(
        cls, kwargs: dict[str, Any], options: dict[str, Any], app: Celeriac | None
    ) -> Signature:
        return cls(
            *[Signature.from_dict(t, app) for t in kwargs.get("tasks") or ()], app=app, **options
        )

    def __call__(self, *args: Any, **kwargs: Any) -> ResultHandle:
        """``chain(...)()`` / ``group(...)()`` sends it, as in Celery."""
        return self.apply_async(args, kwargs)

    def link_error(self, errback: Signature | Mapping[str, Any]) -> Signature:
        """The errback is called by whichever task fails."""
        sig = maybe_signature(errback, self.app)
        for task in self.tasks:
            task.link_error(sig)
        return sig


class chain(_TaskList):
    """Run tasks one after the other, each receiving the previous one's result (``a | b | c``)."""

    __slots__ = ()
    kind = "chain"

    def __or__(self, other: Signature) -> chain:
        if not isinstance(other, Signature):
            return NotImplemented
        extra = other.tasks if isinstance(other, chain) else [other]
        return chain(*self.tasks, *extra, app=self.app, **self.options)

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature:
        """A chain's callback runs after its last task."""
        return self.tasks[-1].link(callback) if self.tasks else super().link(callback)

    def normalize(self) -> list[Signature]:
        """Flatten nested chains and turn a workflow followed by more steps into a chord."""
        steps: list[Signature] = []
        for task in self.tasks:
            if isinstance(task, chain) and not _own_options(task):
                steps.extend(task.normalize())
            else:
                steps.append(task.bind(self.app) if task.app is None and self.app else task)
        steps = [_unrolled(step) for step in steps]
        for i, step in enumerate(steps[:-1]):
            if isinstance(step, chunks):
                step = steps[i] = step.group()
            if isinstance(step, group | chord):
                rest = steps[i + 1 :]
                if isinstance(step, group):
                    tail = rest[0] if len(rest) == 1 else chain(*rest, app=self.app)
                    folded: Signature = chord(step, tail, app=self.app)
                else:
                    folded = chord(step.header, chain(step.body, *rest, app=self.app), app=self.app)
                    folded.options.update(step.options)
                steps = [*steps[:i], folded]
                break
        self.kwargs["tasks"] = steps
        return steps

    def freeze(
        self,
        _id: str | None = None,
        *,
        group_id: str | None = None,
        group_index: int | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> ResultHandle:
        steps = self.normalize()
        if not steps:
            raise ImproperlyConfigured("an empty chain cannot be sent")
        previous: Any = None
        result: Any = None
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            result = step.freeze(
                _id if last else None,
                group_id=group_id if last else None,
                group_index=group_index if last else None,
            )
            if previous is not None:
                _attach(result, previous)
            previous = result
        self.options["task_id"] = steps[-1].id
        frozen: ResultHandle = result
        return frozen

    def _send(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultHandle:
        membership, options = _split({**_own_options(self), **options})
        _relink(options, self)
        if membership.get("chord") is not None:
            single_result(self)
        result = self.freeze(
            membership.get("task_id"),
            group_id=membership.get("group_id"),
            group_index=membership.get("group_index"),
        )
        steps = self.tasks
        if membership.get("chord") is not None:
            join_final(
                steps[-1],
                membership["chord"],
                membership["group_id"],
                membership.get("group_index"),
            )
        options.setdefault("root_id", root_of(steps[0]))
        first, rest = steps[0], steps[1:]
        if rest:
            first.apply_async(args, kwargs, chain=[s.to_dict() for s in reversed(rest)], **options)
        else:
            first.apply_async(args, kwargs, **options)
        return result

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> ResultHandle:
        """Run every step here, in order; a failed step ends the chain (its result returned)."""
        result: Any = None
        for i, step in enumerate(self.normalize()):
            step_args = tuple(args) if i == 0 else (result.get(),)
            previous, result = result, step.apply(step_args, kwargs if i == 0 else None)
            result.parent = previous
            if result.failed():
                break
        frozen: ResultHandle = result
        return frozen

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks) or "chain()"


class group(_TaskList):
    """Run tasks in parallel; the result is a :class:`~celeriac.results.group.GroupResult`.

    Nested groups are unrolled into one (their tasks all run in parallel), as in Celery.
    """

    __slots__ = ()
    kind = "group"

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return _group_result(super().apply_async(args, kwargs, **options))

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature:
        """A group's callback is linked to each of its tasks (use a chord for one call)."""
        sig = maybe_signature(callback, self.app)
        for task in self.tasks:
            task.link(sig)
        return sig

    def flatten(self) -> list[Signature]:
        """Unroll nested groups and chunks, in place."""
        flat: list[Signature] = []
        for task in self.tasks:
            if isinstance(task, chunks):
                task = task.group()
            if isinstance(task, group):
                flat.extend(task.flatten())
            else:
                flat.append(task.bind(self.app) if task.app is None and self.app else task)
        self.kwargs["tasks"] = flat
        return flat

    def freeze(
        self,
        _id: str | None = None,
        *,
        group_id: str | None = None,
        group_index: int | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> GroupResult:
        from celeriac.results.group import GroupResult

        if _id is not None or self.options.get("task_id") is None:
            self.options["task_id"] = _id or new_id()
        gid = str(self.options["task_id"])
        results = [t.freeze(group_id=gid, group_index=i) for i, t in enumerate(self.flatten())]
        return GroupResult(gid, results, app=self.app)

    def _send(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        if not self.tasks and self.app is None:  # nothing to send, no app needed
            from celeriac.results.group import GroupResult

            return GroupResult(str(options.get("task_id") or new_id()), [])
        membership, options = _split({**_own_options(self), **options})
        if membership.get("chord") is not None:
            # a group whose one result joins a chord: collect it first (see single_result)
            collected = single_result(self).apply_async(args, kwargs, **membership, **options)
            parent: GroupResult = collected.parent  # type: ignore[assignment]
            return parent
        result = self.freeze(membership.get("task_id"))
        backend = self._app().backend
        if backend is not None:
            backend.save_group(result.id, [r.id for r in result.results])
        _send_members(self._app(), self.tasks, args, kwargs, options)
        return result

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        """Run every task here, one after the other."""
        from celeriac.results.group import GroupResult

        gid = str(self.options.get("task_id") or new_id())
        results = [t.apply(args, kwargs) for t in self.flatten()]
        return GroupResult(gid, results, app=self.app)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


class chord(_Workflow):
    """A header group whose results, in order, are passed as one list to the body.

    An empty header calls the body with ``[]``. A failed header task fails the body with
    :class:`~celeriac.errors.ChordError` (and calls the body's ``link_error``).
    """

    __slots__ = ()

    def __init__(
        self,
        header: Any,
        body: Signature | Mapping[str, Any] | None = None,
        app: Celeriac | None = None,
        **options: Any,
    ) -> None:
        head = header if isinstance(header, group) else group(*_tasks((header,), app), app=app)
        body_sig = maybe_signature(body, app) if body is not None else None
        the_app = app or head.app or (body_sig.app if body_sig else None)
        super().__init__(
            "celery.chord",
            (),
            {"header": head, "body": body_sig},
            options,
            subtask_type="chord",
            app=the_app,
        )

    @property
    def header(self) -> group:
        value: group = self.kwargs["header"]
        return value

    @property
    def body(self) -> Signature:
        value: Signature | None = self.kwargs["body"]
        if value is None:
            raise ImproperlyConfigured(
                "a chord needs a body: chord(header, body) or chord(header)(body)"
            )
        return value

    @classmethod
    def rebuild(
        cls, kwargs: dict[str, Any], options: dict[str, Any], app: Celeriac | None
    ) -> Signature:
        header = Signature.from_dict(kwargs["header"], app)
        body = kwargs.get("body")
        return cls(header, Signature.from_dict(body, app) if body else None, app=app, **options)

    def __call__(self, body: Signature | None = None, **options: Any) -> ResultHandle:
        """``chord(header)(body)``: send with this body."""
        if body is not None:
            self.kwargs["body"] = maybe_signature(body, self.app)
        return self.apply_async(**options)

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature:
        return self.body.link(callback)

    def link_error(self, errback: Signature | Mapping[str, Any]) -> Signature:
        return self.body.link_error(errback)

    def prepare(self) -> None:
        """Give every header task a single result (a member ending in a group collects it)."""
        members = self.header.flatten()
        self.header.kwargs["tasks"] = [single_result(m) for m in members]

    def freeze(
        self,
        _id: str | None = None,
        *,
        group_id: str | None = None,
        group_index: int | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> ResultHandle:
        self.prepare()
        header_result = self.header.freeze()
        result: Any = self.body.freeze(_id, group_id=group_id, group_index=group_index)
        _attach(result, header_result)
        self.options["task_id"] = self.body.id
        frozen: ResultHandle = result
        return frozen

    def _send(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultHandle:
        membership, options = _split({**_own_options(self), **options})
        _relink(options, self.body)  # a chord's callbacks belong to its body
        self.kwargs["body"] = single_result(self.body) if membership.get("chord") else self.body
        result = self.freeze(
            membership.get("task_id"),
            group_id=membership.get("group_id"),
            group_index=membership.get("group_index"),
        )
        body = self.body
        if membership.get("chord") is not None:
            join_final(
                body, membership["chord"], membership["group_id"], membership.get("group_index")
            )
        members = self.header.tasks
        if not members:
            body.apply_async(([],), **options)
            return result
        gid = str(self.header.id)
        body.options["chord_size"] = len(members)
        body_data = body.to_dict()
        for index, member in enumerate(members):
            join_final(member, body_data, gid, index)
        backend = self._app().backend
        if backend is None:
            raise ImproperlyConfigured("a chord needs a result backend (set result_backend)")
        backend.save_group(gid, [str(m.id) for m in members])
        _send_members(self._app(), members, args, kwargs, options)
        return result

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> ResultHandle:
        """Run the header here, then the body with its results (or fail it: ChordError)."""
        from celeriac.results.result import EagerResult

        self.prepare()
        header = self.header.apply(args, kwargs)
        for member in header.results:
            if member.failed():
                error = ChordError(f"Dependency {member.id} raised {member.result!r}")
                meta = ResultMeta(
                    str(self.body.id or new_id()), states.FAILURE, exception_to_dict(error)
                )
                failed: ResultHandle = EagerResult(meta, self.app, exception=error)
                return failed
        result = self.body.apply((header.get(),))
        result.parent = header
        return result

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.kwargs.get('body')!r})"


def _unrolled(step: Signature) -> Signature:
    """A chain step that is a group of one task is that task (Celery 5.5 does the same)."""
    if isinstance(step, group) and len(step.tasks) == 1 and not _own_options(step):
        return step.tasks[0]
    return step


def single_result(sig: Signature) -> Signature:
    """``sig`` rewritten so that its final node is one task: a trailing group becomes a chord
    whose body (the builtin identity task) hands the group's list on as one result."""
    if isinstance(sig, chunks):
        sig = sig.group()
    if isinstance(sig, group):
        app = sig._app()
        return chord(sig, Signature(IDENTITY_TASK, app=app), app=app)
    if isinstance(sig, chain):
        steps = sig.normalize()
        if steps:
            steps[-1] = single_result(steps[-1])
    elif isinstance(sig, chord):
        sig.kwargs["body"] = single_result(sig.body)
    return sig


def root_of(sig: Signature) -> str | None:
    """The ``root_id`` of a chain sent now: the running task's root inside a task, else the id
    of the chain's first task (frozen by then). Group and chord members sent from outside a
    task are each their own root, as in Celery."""
    from celeriac.context import current_request

    request = current_request()
    if request is not None and not request.is_eager:
        return request.root_id or request.id
    while isinstance(sig, chain | group | chord):
        if isinstance(sig, chord):
            sig = sig.header.tasks[0] if sig.header.tasks else sig.body
        elif not sig.tasks:
            return None
        else:
            sig = sig.tasks[0]
    return sig.id


def join_final(sig: Signature, body: Mapping[str, Any], group_id: str, index: int | None) -> None:
    """Make the final task of ``sig`` a member of a chord: it carries the body and the group.

    Called after freezing, on a signature made by :func:`single_result`.
    """
    if isinstance(sig, chain):
        join_final(sig.tasks[-1], body, group_id, index)
    elif isinstance(sig, chord):
        join_final(sig.body, body, group_id, index)
    elif isinstance(sig, group):
        raise ImproperlyConfigured(
            "a group must be wrapped by single_result() before it joins a chord"
        )
    else:
        sig.options.update(chord=dict(body), group_id=group_id, group_index=index)


class _basemap(Signature):
    """A call of a builtin map task over ``it``, run as one task in one worker."""

    __slots__ = ()
    task_name = ""
    kind = ""

    def __init__(
        self, task: Any, it: Iterable[Any], app: Celeriac | None = None, **options: Any
    ) -> None:
        sig = maybe_signature(task, app)
        super().__init__(
            self.task_name,
            (),
            {"task": sig.to_dict(), "it": list(it)},
            options,
            immutable=True,
            subtask_type=self.kind,
            app=app or sig.app,
        )

    @classmethod
    def rebuild(
        cls, kwargs: dict[str, Any], options: dict[str, Any], app: Celeriac | None
    ) -> Signature:
        return cls(kwargs["task"], kwargs.get("it") or (), app=app, **options)

    def __repr__(self) -> str:
        return f"[{Signature.from_dict(self.kwargs['task'])!r}(x) for x in {self.kwargs['it']!r}]"


class xmap(_basemap):
    """``[task(x) for x in it]`` in one message: ``add.map(range(10))``."""

    __slots__ = ()
    task_name = "celery.map"
    kind = "xmap"


class xstarmap(_basemap):
    """``[task(*x) for x in it]`` in one message: ``add.starmap([(1, 2), (3, 4)])``."""

    __slots__ = ()
    task_name = "celery.starmap"
    kind = "xstarmap"


class chunks(_Workflow):
    """Split ``it`` (argument tuples) into chunks of ``n``, each one ``xstarmap`` message, sent
    as a group: many small tasks in few messages."""

    __slots__ = ()

    def __init__(
        self, task: Any, it: Iterable[Any], n: int, app: Celeriac | None = None, **options: Any
    ) -> None:
        if int(n) < 1:
            raise ImproperlyConfigured(f"chunks: n must be at least 1, not {n!r}")
        sig = maybe_signature(task, app)
        super().__init__(
            "celery.chunks",
            (),
            {"task": sig.to_dict(), "it": [list(x) for x in it], "n": int(n)},
            options,
            subtask_type="chunks",
            app=app or sig.app,
        )

    @classmethod
    def rebuild(
        cls, kwargs: dict[str, Any], options: dict[str, Any], app: Celeriac | None
    ) -> Signature:
        return cls(kwargs["task"], kwargs.get("it") or (), kwargs["n"], app=app, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> ResultHandle:
        """``chunks(...)()`` sends it, as in Celery."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return _group_result(super().apply_async(args, kwargs, **options))

    def group(self) -> group:
        items, n = self.kwargs["it"], self.kwargs["n"]
        parts = [items[i : i + n] for i in range(0, len(items), n)]
        return group(
            [xstarmap(self.kwargs["task"], part, app=self.app) for part in parts],
            app=self.app,
            **_own_options(self),
        )

    def freeze(
        self,
        _id: str | None = None,
        *,
        group_id: str | None = None,
        group_index: int | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> GroupResult:
        return self.group().freeze(_id)

    def _send(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> GroupResult:
        return self.group()._send(args, kwargs, **options)

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> GroupResult:
        return self.group().apply(args, kwargs)


for _kind in (chain, group, chord, xmap, xstarmap, chunks):
    SUBTASK_TYPES[_kind.__name__] = _kind
