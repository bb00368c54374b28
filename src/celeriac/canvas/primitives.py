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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas.maps import chunks, xmap, xstarmap
from celeriac.canvas.signature import SUBTASK_TYPES, Signature, maybe_signature
from celeriac.canvas.workflow import (
    IDENTITY_TASK,
    _attach,
    _group_result,
    _own_options,
    _relink,
    _send_members,
    _split,
    _TaskList,
    _tasks,
    _Workflow,
)
from celeriac.errors import ChordError, ImproperlyConfigured
from celeriac.protocol.message import new_id
from celeriac.results.base import ResultMeta, exception_to_dict

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas.signature import ResultHandle
    from celeriac.results.group import GroupResult

__all__ = [
    "chain",
    "chord",
    "chunks",
    "group",
    "join_final",
    "root_of",
    "single_result",
    "xmap",
    "xstarmap",
]


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

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Spread the tasks' starts: the first gets ``countdown=start``, each next one ``step``
        more, up to ``stop`` (then the rest keep ``stop``), as Celery's ``skew``."""
        countdown = start
        for task in self.flatten():
            task.set(countdown=countdown)
            if stop is None or countdown + step <= stop:
                countdown += step
        return self

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


for _kind in (chain, group, chord, xmap, xstarmap, chunks):
    SUBTASK_TYPES[_kind.__name__] = _kind
