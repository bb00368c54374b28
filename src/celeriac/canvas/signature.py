"""A signature: one task call (name, args, kwargs, options) as data that can travel in messages.

It serializes to Celery's plain-dict layout (``task``, ``args``, ``kwargs``, ``options``,
``immutable``, ``subtask_type``, ``chord_size``), so callbacks and whole workflows ride inside a
message body and a worker rebuilds them from the task name alone. Composite signatures (chain,
group, chord and the map family, in :mod:`celeriac.canvas.primitives`) are subclasses that keep
their parts in ``kwargs``; :meth:`Signature.from_dict` picks the class from ``subtask_type``.

A signature is mutable the way Celery's is: :meth:`freeze` writes the task id into its options
(so the id is known before sending) and :meth:`link` adds a callback in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from celeriac.context import current_request, default_app
from celeriac.errors import ImproperlyConfigured
from celeriac.protocol.message import new_id

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas.primitives import chain
    from celeriac.results.result import AsyncResult

    #: What sending a signature returns: a task's result, or a GroupResult (itself an
    #: AsyncResult) for a group, a chain ending in a group, or chunks.
    ResultHandle: TypeAlias = AsyncResult[Any]
    from celeriac.task import Task

#: Composite signature classes by ``subtask_type`` (filled by :mod:`celeriac.canvas.primitives`).
SUBTASK_TYPES: dict[str, type[Signature]] = {}

#: Options that say where a node sits in a workflow; a worker reads them, users rarely set them.
WORKFLOW_OPTIONS = ("task_id", "group_id", "group_index", "chord", "root_id", "parent_id")


class Signature:
    """A task call as data. ``immutable`` signatures ignore the parent's result in a callback."""

    __slots__ = ("app", "args", "immutable", "kwargs", "options", "subtask_type", "task")

    def __init__(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        subtask_type: str | None = None,
        app: Celeriac | None = None,
    ) -> None:
        self.task = task
        self.args: tuple[Any, ...] = tuple(args)
        self.kwargs: dict[str, Any] = dict(kwargs or {})
        self.options: dict[str, Any] = dict(options or {})
        self.immutable = immutable
        self.subtask_type = subtask_type
        self.app = app

    # -- data -----------------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        """The task id once frozen (or given as ``task_id``), else ``None``."""
        value = self.options.get("task_id")
        return str(value) if value is not None else None

    @property
    def type(self) -> Task[Any, Any]:
        """The registered task this signature calls (needs an app that knows it)."""
        return self._app().get_task(self.task)

    def to_dict(self) -> dict[str, Any]:
        """Celery's dict layout, JSON-ready when args and kwargs are (nested signatures too)."""
        return {
            "task": self.task,
            "args": [_plain(a) for a in self.args],
            "kwargs": {k: _plain(v) for k, v in self.kwargs.items()},
            "options": {k: _plain(v) for k, v in self.options.items()},
            "immutable": self.immutable,
            "subtask_type": self.subtask_type,
            "chord_size": self.options.get("chord_size"),
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any] | Signature, app: Celeriac | None = None
    ) -> Signature:
        """Rebuild a signature (of the right composite class) from its dict; a malformed one
        raises :class:`~celeriac.errors.ImproperlyConfigured` naming the defect."""
        if isinstance(data, Signature):
            if app is not None and data.app is None:
                data.app = app
            return data
        if not isinstance(data, Mapping) or not isinstance(data.get("task"), str):
            raise ImproperlyConfigured(f"not a signature: {data!r}")
        args = data.get("args") or ()
        kwargs = data.get("kwargs") or {}
        options = data.get("options") or {}
        if not isinstance(args, Sequence) or isinstance(args, str | bytes):
            raise ImproperlyConfigured(f"signature {data['task']!r} has malformed args")
        if not isinstance(kwargs, Mapping) or not isinstance(options, Mapping):
            raise ImproperlyConfigured(f"signature {data['task']!r} has malformed kwargs/options")
        subtask_type = data.get("subtask_type")
        kind = SUBTASK_TYPES.get(subtask_type) if isinstance(subtask_type, str) else None
        if kind is not None:
            return kind.rebuild(dict(kwargs), dict(options), app)
        options = dict(options)
        if data.get("chord_size") is not None:
            options["chord_size"] = data["chord_size"]
        return cls(
            data["task"],
            tuple(args),
            dict(kwargs),
            options,
            bool(data.get("immutable", False)),
            subtask_type if isinstance(subtask_type, str) else None,
            app,
        )

    @classmethod
    def rebuild(
        cls, kwargs: dict[str, Any], options: dict[str, Any], app: Celeriac | None
    ) -> Signature:
        """How a composite class rebuilds itself from its ``kwargs`` (overridden there)."""
        raise NotImplementedError  # pragma: no cover - only composite classes are registered

    # -- building -------------------------------------------------------------------------------
    def clone(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy with ``args`` prepended (unless immutable), kwargs and options merged.

        Celery's partial application: a callback gets its parent's result *before* its own
        arguments, so ``add.s(10)`` linked to a task returning 5 runs ``add(5, 10)``.
        """
        new = self._copy()
        if not self.immutable:
            new.args = tuple(args) + self.args
            new.kwargs = {**self.kwargs, **(kwargs or {})}
        new.options.update(options)
        return new

    def _copy(self) -> Signature:
        """A copy that shares no mutable state with this one (nested signatures included)."""
        return Signature.from_dict(self.to_dict(), self.app)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Change some options in place (queue, countdown, priority...) and return self;
        ``immutable=True`` makes it ignore its parent's result, as in Celery."""
        if immutable is not None:
            self.immutable = immutable
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self.immutable = immutable

    def bind(self, app: Celeriac) -> Signature:
        self.app = app
        return self

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature:
        """Send ``callback`` with this task's result when it succeeds; returns the callback."""
        return self._append("link", callback)

    def link_error(self, errback: Signature | Mapping[str, Any]) -> Signature:
        """Send ``errback`` with this task's id when it fails; returns the errback."""
        return self._append("link_error", errback)

    def on_error(self, errback: Signature | Mapping[str, Any]) -> Signature:
        """:meth:`link_error` that returns self, for a fluent chain."""
        self.link_error(errback)
        return self

    def _append(self, key: str, sig: Signature | Mapping[str, Any]) -> Signature:
        sig = Signature.from_dict(sig, self.app)
        existing = self.options.get(key) or []
        items = list(existing) if isinstance(existing, list | tuple) else [existing]
        items.append(sig)
        self.options[key] = items
        return sig

    def freeze(
        self,
        _id: str | None = None,
        *,
        group_id: str | None = None,
        group_index: int | None = None,
        root_id: str | None = None,
        parent_id: str | None = None,
    ) -> ResultHandle:
        """Fix this call's id (and place in a group) before sending; returns its result handle."""
        if _id is not None or self.options.get("task_id") is None:
            self.options["task_id"] = _id or new_id()
        for key, value in (
            ("group_id", group_id),
            ("group_index", group_index),
            ("root_id", root_id),
            ("parent_id", parent_id),
        ):
            if value is not None:
                self.options[key] = value
        return self._app().AsyncResult(str(self.options["task_id"]), self.task)

    def __or__(self, other: Signature) -> chain:
        from celeriac.canvas.primitives import chain

        if not isinstance(other, Signature):
            return NotImplemented
        return chain(self, other)

    # -- sending --------------------------------------------------------------------------------
    def _app(self) -> Celeriac:
        """The app it was made with, else the default app (as Celery's ``signature(name)``)."""
        app = self.app if self.app is not None else default_app()
        if app is None:
            raise ImproperlyConfigured(
                f"signature {self.task!r} is bound to no app and no app exists: create one, or "
                f"build it with task.s() or bind(app)"
            )
        return app

    def __invert__(self) -> Any:
        """``~sig``: send it and wait for its result (Celery's shortcut, for the shell)."""
        return self.apply_async().get()

    def apply_async(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ResultHandle:
        """Send the task; ``args`` are prepended to the signature's own (unless immutable)."""
        app = self._app()
        if app.conf.task_always_eager:
            return self.apply(args, kwargs)
        sig = self.clone(args, kwargs, **options)
        sig_options = {k: v for k, v in sig.options.items() if k != "chord_size"}
        index = sig_options.pop("group_index", None)
        if index is not None:  # a header of the message, as Celery sends it
            sig_options["headers"] = {**(sig_options.get("headers") or {}), "group_index": index}
        result = app.send_task(sig.task, sig.args, dict(sig.kwargs), **sig_options)
        record_child(result.id)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> ResultHandle:
        return self.apply_async(args, kwargs)

    def apply(
        self, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> ResultHandle:
        """Run the task in this process now (eager), with the worker's semantics; returns an
        :class:`~celeriac.results.result.EagerResult`. Workflows run step by step."""
        sig = self.clone(args, kwargs)
        task_id = sig.options.get("task_id")
        return sig.type.apply(sig.args, sig.kwargs, **({"task_id": task_id} if task_id else {}))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the task's function here, as Celery does (no message, no result stored)."""
        sig = self.clone(args, kwargs)
        return sig.type(*sig.args, **sig.kwargs)

    # -- comparison and display -------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Signature):
            return self.to_dict() == other.to_dict()
        if isinstance(other, Mapping):
            try:
                return self.to_dict() == Signature.from_dict(other).to_dict()
            except ImproperlyConfigured:  # a dict that is no signature
                return False
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dict

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"


def record_child(task_id: str) -> None:
    """Note ``task_id`` as sent by the running task (stored with its result: ``children``)."""
    request = current_request()
    if request is not None and not request.is_eager:
        request.children.append(task_id)


def _plain(value: Any) -> Any:
    """Signatures nested in args, kwargs or options become dicts; lists are walked."""
    if isinstance(value, Signature):
        return value.to_dict()
    if isinstance(value, list | tuple) and any(isinstance(v, Signature | dict) for v in value):
        return [_plain(v) for v in value]
    if isinstance(value, dict) and any(
        isinstance(v, Signature | dict | list) for v in value.values()
    ):
        return {k: _plain(v) for k, v in value.items()}
    return value


def signature(
    task: str | Signature | Mapping[str, Any],
    args: Sequence[Any] | None = (),
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    immutable: bool = False,
    app: Celeriac | None = None,
    **extra_options: Any,
) -> Signature:
    """Build a signature from a task name (or rebuild one, of any kind, from its dict).

    As in Celery, send options may also come as keywords:
    ``signature("tasks.add", args=(2, 2), countdown=10)``.
    """
    if isinstance(task, Signature | Mapping):
        sig = Signature.from_dict(task, app)
        if extra_options:
            sig.options.update(extra_options)
        return sig
    merged = {**(options or {}), **extra_options}
    return Signature(task, tuple(args or ()), dict(kwargs or {}), merged, immutable, app=app)


def maybe_signature(value: Any, app: Celeriac | None = None) -> Signature:
    """A signature from a Signature, a dict or a task (``task.s()``); anything else is refused."""
    from celeriac.task import Task

    if isinstance(value, Signature | Mapping):
        return Signature.from_dict(value, app)
    if isinstance(value, Task):
        return value.s()
    raise ImproperlyConfigured(f"expected a signature, got {value!r}")
