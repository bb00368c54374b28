"""One request in, one outcome out: run the task and classify how it ended.

This is the code every pool runs (a thread of the threads pool, the solo thread, a prefork child),
and ``apply()`` runs it too, so eager and real execution share their semantics: ``Retry``,
``Reject`` and ``Ignore`` steer the outcome, ``autoretry_for`` turns an exception into a retry
with back-off, and past ``max_retries`` the task fails with ``MaxRetriesExceededError``.

:func:`finish` then does the outcome's I/O (store the result, send link callbacks) in the same
thread, so the worker's event loop only settles messages.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback as tb
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from celeriac import states
from celeriac.canvas.signature import Signature
from celeriac.context import Request, running
from celeriac.errors import Ignore, MaxRetriesExceededError, Reject, Retry, TaskRejectedError
from celeriac.results.base import ResultMeta, exception_to_dict

if TYPE_CHECKING:
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

IGNORED = "IGNORED"
Settle = Literal["ack", "requeue", "reject"]


@dataclass(slots=True)
class Outcome:
    """How a task ended and what to do with its message."""

    state: str
    settle: Settle = "ack"
    value: Any = None
    exc: BaseException | None = None
    traceback: str | None = None
    reason: str | None = None
    runtime: float = 0.0


_thread_state = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's own event loop for ``async def`` tasks: made once, reused for every task."""
    loop: asyncio.AbstractEventLoop | None = getattr(_thread_state, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _thread_state.loop = loop
    return loop


def _call(task: Task[Any, Any], request: Request) -> Any:
    result = task(*request.args, **request.kwargs)
    if task.is_async:
        coro: Coroutine[Any, Any, Any] = result
        return thread_loop().run_until_complete(coro)
    return result


def _failure(exc: BaseException, started: float) -> Outcome:
    return Outcome(
        state=states.FAILURE,
        exc=exc,
        traceback="".join(tb.format_exception(exc)),
        runtime=time.perf_counter() - started,
    )


def execute(task: Task[Any, Any], request: Request) -> Outcome:
    """Run ``task`` for ``request`` here and classify the ending. Never raises."""
    started = time.perf_counter()
    with running(request):
        try:
            value = _call(task, request)
        except Retry as retry:
            return Outcome(
                states.RETRY,
                exc=retry.exc or retry,
                reason=str(retry),
                runtime=time.perf_counter() - started,
            )
        except Reject as reject:
            return Outcome(
                states.REJECTED,
                settle="requeue" if reject.requeue else "reject",
                exc=reject,
                reason=reject.reason,
                runtime=time.perf_counter() - started,
            )
        except Ignore:
            return Outcome(IGNORED, runtime=time.perf_counter() - started)
        except Exception as exc:
            if (
                task.autoretry_for
                and isinstance(exc, task.autoretry_for)
                and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
            ):
                return _autoretry(task, request, exc, started)
            return _failure(exc, started)
    return Outcome(states.SUCCESS, value=value, runtime=time.perf_counter() - started)


def _autoretry(task: Task[Any, Any], request: Request, exc: Exception, started: float) -> Outcome:
    """``autoretry_for`` matched: retry with back-off, or fail once retries are spent."""
    options = dict(task.retry_kwargs)
    countdown = options.pop("countdown", None)
    if countdown is None:
        countdown = task.backoff_delay(request.retries)
    try:
        task.retry(exc=exc, countdown=countdown, **options)
    except Retry as retry:
        return Outcome(
            states.RETRY, exc=exc, reason=str(retry), runtime=time.perf_counter() - started
        )
    except MaxRetriesExceededError as error:
        return _failure(error, started)
    except Exception as error:  # the retry's own publish failed: the task fails with that
        return _failure(error, started)
    raise AssertionError("Task.retry returned")  # pragma: no cover - retry always raises


def meta_for(
    task: Task[Any, Any], request: Request, outcome: Outcome, worker: str | None
) -> ResultMeta | None:
    """The record to store for this outcome, or ``None`` when nothing should be stored."""
    ignore = request.ignore_result or task.ignore_result
    if outcome.state == IGNORED or outcome.settle == "requeue":
        return None  # nothing final happened: the message runs again
    if outcome.state == states.SUCCESS:
        if ignore:
            return None
        result: Any = outcome.value
    else:
        keep_errors = task.option(
            "store_errors_even_if_ignored", "task_store_errors_even_if_ignored"
        )
        if ignore and not keep_errors:
            return None
        exc = outcome.exc if outcome.exc is not None else RuntimeError(outcome.reason or "")
        if isinstance(exc, Reject):
            exc = TaskRejectedError(exc.reason)
        result = exception_to_dict(exc)
    extended = task.app.conf.result_extended
    return ResultMeta(
        task_id=request.id,
        status=outcome.state,
        result=result,
        traceback=outcome.traceback,
        name=task.name if extended else None,
        args=list(request.args) if extended else None,
        kwargs=request.kwargs if extended else None,
        worker=worker if extended else None,
        retries=request.retries,
        queue=request.delivery_info.get("queue") if extended else None,
        parent_id=request.parent_id,
        root_id=request.root_id,
        group_id=request.group,
    )


def log_outcome(task: Task[Any, Any], request: Request, outcome: Outcome) -> None:
    """One line per task at INFO; failures at ERROR with their traceback (unless expected)."""
    if outcome.state == states.SUCCESS:
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Task %s[%s] succeeded in %.4fs: %.200r",
                task.name,
                request.id,
                outcome.runtime,
                outcome.value,
            )
    elif outcome.state == states.FAILURE:
        expected = task.throws and isinstance(outcome.exc, task.throws)
        if expected:
            logger.info("Task %s[%s] raised expected: %r", task.name, request.id, outcome.exc)
        else:
            logger.error(
                "Task %s[%s] raised unexpected: %r\n%s",
                task.name,
                request.id,
                outcome.exc,
                outcome.traceback or "",
            )
    elif outcome.state == states.RETRY:
        logger.info("Task %s[%s] retry: %s", task.name, request.id, outcome.reason)
    elif outcome.state == states.REJECTED:
        logger.warning("Task %s[%s] rejected: %s", task.name, request.id, outcome.reason)


def finish(
    task: Task[Any, Any], request: Request, outcome: Outcome, worker: str | None = None
) -> None:
    """Store the outcome and send ``link``/``link_error`` callbacks. Logs, never raises."""
    log_outcome(task, request, outcome)
    app = task.app
    meta = meta_for(task, request, outcome, worker)
    if meta is not None and app.backend is not None and not request.is_eager:
        try:
            app.backend.store(meta)
        except Exception as exc:
            logger.error(
                "Task %s[%s]: could not store its %s result: %s",
                task.name,
                request.id,
                outcome.state,
                exc,
            )
    try:
        if outcome.state == states.SUCCESS and request.callbacks:
            for data in request.callbacks:
                sig = Signature.from_dict(data, app)
                sig.apply_async(
                    (outcome.value,), parent_id=request.id, root_id=request.root_id or request.id
                )
        elif outcome.state == states.FAILURE and request.errbacks:
            for data in request.errbacks:
                sig = Signature.from_dict(data, app)
                sig.apply_async(
                    (request.id,), parent_id=request.id, root_id=request.root_id or request.id
                )
    except Exception as exc:
        logger.error("Task %s[%s]: could not send its callbacks: %s", task.name, request.id, exc)


def run_request(task: Task[Any, Any], request: Request, worker: str | None = None) -> Outcome:
    """Execute and finish: what a pool thread or child runs for one message."""
    outcome = execute(task, request)
    finish(task, request, outcome, worker)
    return outcome
