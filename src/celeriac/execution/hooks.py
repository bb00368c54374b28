"""The task class hooks Celery users override, called by the worker around each run.

``before_start`` runs just before the task body; after it, exactly one of ``on_success``,
``on_failure`` and ``on_retry``, then ``after_return`` (not after a retry or a rejection, as in
Celery), once the outcome was handed to the result store, in the thread or process that ran
the task, with the task's request current. A hook that
raises is logged and does not change the outcome: the task's result is already decided.

Only the hooks a task's class overrides are called (``Task.hooks`` lists them), so a plain task
pays nothing for them.
"""

from __future__ import annotations

import logging
import traceback as tb
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac import states

if TYPE_CHECKING:
    from celeriac.context import Request
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    """What ``on_failure``/``on_retry``/``after_return`` get as ``einfo`` (Celery's
    ``billiard.einfo.ExceptionInfo``): the exception, its type and its formatted traceback."""

    exception: BaseException
    traceback: str

    @property
    def type(self) -> type[BaseException]:
        return type(self.exception)

    @property
    def tb(self) -> Any:
        return self.exception.__traceback__

    def __str__(self) -> str:
        return self.traceback


def einfo_of(exc: BaseException | None, traceback: str | None) -> ExceptionInfo | None:
    if exc is None:
        return None
    return ExceptionInfo(exc, traceback or "".join(tb.format_exception(exc)))


def before_start(task: Task[Any, Any], request: Request) -> None:
    if "before_start" in task.hooks:
        _safely(task, request, "before_start", request.id, request.args, request.kwargs)


def after_outcome(
    task: Task[Any, Any],
    request: Request,
    state: str,
    value: Any,
    exc: BaseException | None,
    traceback: str | None,
) -> None:
    """The outcome hooks of one finished run (none for a run that ends without an outcome)."""
    hooks = task.hooks
    if not hooks:
        return
    einfo = einfo_of(exc, traceback)
    args, kwargs = request.args, request.kwargs
    if state == states.SUCCESS:
        if "on_success" in hooks:
            _safely(task, request, "on_success", value, request.id, args, kwargs)
    elif state == states.RETRY:
        if "on_retry" in hooks and exc is not None:
            _safely(task, request, "on_retry", exc, request.id, args, kwargs, einfo)
    elif state == states.FAILURE and exc is not None and "on_failure" in hooks:
        _safely(task, request, "on_failure", exc, request.id, args, kwargs, einfo)
    if "after_return" in hooks and state not in (states.RETRY, states.REJECTED):
        retval = value if state == states.SUCCESS else exc
        _safely(task, request, "after_return", state, retval, request.id, args, kwargs, einfo)


def _safely(task: Task[Any, Any], request: Request, hook: str, *args: Any) -> None:
    try:
        getattr(task, hook)(*args)
    except Exception as exc:
        logger.exception("Task %s[%s]: its %s hook raised %r", task.name, request.id, hook, exc)
