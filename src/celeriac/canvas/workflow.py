"""What the workflow primitives share: the composite base classes and the option plumbing.

:class:`_Workflow` makes every send work on a copy (a user's workflow is never changed and can be
sent again); :class:`_TaskList` holds the task list of a chain or a group; the helpers move
membership options (``task_id``, ``group_id``, ``group_index``, ``chord``) to a workflow's final
task and callbacks to where Celery puts them. The primitives themselves live in
:mod:`celeriac.canvas.primitives` and :mod:`celeriac.canvas.maps`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.canvas.send import send_each
from celeriac.canvas.signature import WORKFLOW_OPTIONS, Signature, maybe_signature

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
        if self.app is not None and self.app.conf.task_always_eager:
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
