"""One request in, one outcome out: run the task and classify how it ended.

This is the code every pool runs (a thread of the threads pool, the solo thread, a prefork child),
and ``apply()`` runs it too, so eager and real execution share their semantics: ``Retry``,
``Reject`` and ``Ignore`` steer the outcome, ``autoretry_for`` turns an exception into a retry
with back-off, and past ``max_retries`` the task fails with ``MaxRetriesExceededError``.

:func:`finish` then does the outcome's I/O (store the result, send link callbacks) in the same
thread, so the worker's event loop only settles messages.

The asyncio pool runs ``async def`` tasks on the worker's own loop with the async twins
:func:`aexecute`, :func:`afinish` and :func:`arun_request`: same classification, but storing and
sending never block that loop. :func:`execute_with` lets a pool supply how the function is called
(the threads pool wraps async tasks in their time limits there).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import time
import traceback as tb
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from celeriac import signals, states
from celeriac.canvas import flow
from celeriac.canvas.signature import Signature
from celeriac.context import Request, running
from celeriac.errors import (
    Ignore,
    MaxRetriesExceededError,
    Reject,
    Retry,
    TaskRejectedError,
    TaskRevokedError,
    Terminated,
)
from celeriac.execution import hooks as task_hooks
from celeriac.protocol.message import parse_time
from celeriac.results.base import ResultMeta, exception_to_dict
from celeriac.utils.loops import thread_loop

if TYPE_CHECKING:
    from celeriac.task import Task
    from celeriac.worker.timelimits import CoroutineGuard

logger = logging.getLogger("celeriac.worker")

IGNORED = states.IGNORED
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
    #: ``repr(value)`` made where the task ran, when ``value`` itself stayed there (a prefork
    #: child hands its parent the repr for the ``task-succeeded`` event, not the value).
    result_repr: str | None = None


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
    return execute_with(task, request, _call)


def execute_with(
    task: Task[Any, Any], request: Request, call: Callable[[Task[Any, Any], Request], Any]
) -> Outcome:
    """:func:`execute`, with ``call(task, request)`` running the function: a pool passes its own
    to run ``async def`` tasks under time limits. Never raises for the task's own failure."""
    started = time.perf_counter()
    expired = _expired(request)
    if expired is not None:
        return expired
    with running(request, task):
        send_prerun(task, request)
        try:
            _started(task, request)
            value = call(task, request)
        except (Retry, Reject, Ignore, Exception) as exc:
            return classify(task, request, exc, started)
    return Outcome(states.SUCCESS, value=value, runtime=time.perf_counter() - started)


async def aexecute(
    task: Task[Any, Any], request: Request, guard: CoroutineGuard | None = None
) -> Outcome:
    """The async twin of :func:`execute` for ``async def`` tasks, run on the current loop.

    With a ``guard`` the coroutine runs under its time limits and can be terminated; a terminated
    run ends as REVOKED (``TaskRevokedError("terminated")``).
    """
    if not task.is_async:
        raise TypeError(f"aexecute runs async def tasks only; {task.name} is sync")
    started = time.perf_counter()
    expired = _expired(request)
    if expired is not None:
        return expired
    with running(request, task):
        send_prerun(task, request)
        try:
            _started(task, request)
            coro = task(*request.args, **request.kwargs)
            value = await (coro if guard is None else guard.run(coro))
        except (Retry, Reject, Ignore, Exception) as exc:
            if guard is not None and guard.terminated:
                return Outcome(
                    states.REVOKED,
                    exc=Terminated("terminated"),
                    reason="terminated",
                    runtime=time.perf_counter() - started,
                )
            return classify(task, request, exc, started)
    return Outcome(states.SUCCESS, value=value, runtime=time.perf_counter() - started)


def _started(task: Task[Any, Any], request: Request) -> None:
    """What happens as the body starts: STARTED stored when the task tracks it (Celery's
    ``track_started``, with the worker's pid and hostname as the state's meta), then the task's
    ``before_start`` hook. Inside the run's ``try``: a hook that raises fails the run."""
    if not request.is_eager and task.track_started and not task.ignore_result:
        writer = task.app.result_writer
        if writer is not None:
            meta = ResultMeta(
                request.id,
                states.STARTED,
                {"pid": os.getpid(), "hostname": request.hostname},
                retries=request.retries,
                parent_id=request.parent_id,
                root_id=request.root_id,
                group_id=request.group,
                reply_to=request.reply_to,
            )
            try:
                writer.submit(meta)
            except Exception as exc:  # the run matters more than its interim state
                logger.warning("Task %s[%s]: STARTED not stored: %r", task.name, request.id, exc)
    if task.hooks:
        task_hooks.before_start(task, request)


def _expired(request: Request) -> Outcome | None:
    """A request that expired while it waited in a pool's queue is REVOKED, not run."""
    if not request.expires or request.is_eager:
        return None
    expires = parse_time(request.expires, "expires")
    if expires is None or expires > datetime.now(UTC):
        return None
    why = f"expired at {expires.isoformat()}"
    return Outcome(states.REVOKED, exc=TaskRevokedError(why), reason=why)


def classify(task: Task[Any, Any], request: Request, exc: BaseException, started: float) -> Outcome:
    """The outcome of a run that raised ``exc``; call it while ``request`` is current (an
    ``autoretry_for`` match sends the retry from here)."""
    if isinstance(exc, Retry):
        return Outcome(
            states.RETRY,
            exc=exc.exc or exc,
            reason=str(exc),
            traceback="".join(tb.format_exception(exc)),  # task-retried carries it, as Celery's
            runtime=time.perf_counter() - started,
        )
    if isinstance(exc, Reject):
        return Outcome(
            states.REJECTED,
            settle="requeue" if exc.requeue else "reject",
            exc=exc,
            reason=exc.reason,
            runtime=time.perf_counter() - started,
        )
    if isinstance(exc, Ignore):
        return Outcome(IGNORED, runtime=time.perf_counter() - started)
    if (
        isinstance(exc, Exception)
        and task.autoretry_for
        and isinstance(exc, task.autoretry_for)
        and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
    ):
        return _autoretry(task, request, exc, started)
    return _failure(exc, started)


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
    # a chord member's result is read by the member that sends the body: always store it
    ignore = (request.ignore_result or task.ignore_result) and not request.chord
    if outcome.state == IGNORED or outcome.settle == "requeue":
        return None  # nothing final happened: the message runs again
    if outcome.state == states.RETRY and request.retry_stored:
        return None  # Task.retry stored it before it sent the next attempt (see there)
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
    children = list(request.children)
    if outcome.state == states.SUCCESS:
        step = flow.next_step_id(request)
        if step is not None:
            children.append(step)
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
        children=children,
        reply_to=request.reply_to,
    )


def log_outcome(task: Task[Any, Any], request: Request, outcome: Outcome) -> None:
    """One line per task at INFO; failures at ERROR with their traceback (unless expected).
    A send's ``shadow`` name, when it has one, stands for the task's name (Celery's)."""
    if request.headers.get("shadow"):
        task = _Shown(request.headers["shadow"], task.throws)  # type: ignore[assignment]
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


@dataclass(frozen=True, slots=True)
class _Shown:
    """The task as a log line names it (its ``shadow`` name)."""

    name: str
    throws: tuple[type[BaseException], ...]


def _callbacks(
    task: Task[Any, Any], request: Request, outcome: Outcome
) -> list[tuple[Signature, tuple[Any, ...]]]:
    """The callbacks this outcome triggers, decoded and frozen (their ids fixed), so that a
    success's ``link`` callbacks are among its stored ``children`` (Celery's order: callbacks
    get their ids before the result is stored). One that cannot be decoded is logged and ends
    the list; the ones before it are still sent."""
    found: list[tuple[Signature, tuple[Any, ...]]] = []
    try:
        for sig, args in _linked(task, request, outcome):
            if outcome.state == states.SUCCESS:
                request.children.append(sig.freeze().id)
            found.append((sig, args))
    except Exception as exc:
        logger.error("Task %s[%s]: could not read its callbacks: %s", task.name, request.id, exc)
    return found


def _linked(
    task: Task[Any, Any], request: Request, outcome: Outcome
) -> Iterator[tuple[Signature, tuple[Any, ...]]]:
    """The callbacks this outcome triggers, each with the argument it is sent (lazily: one that
    cannot be decoded stops the rest, after the earlier ones were sent)."""
    app = task.app
    if outcome.state == states.SUCCESS and request.callbacks:
        for data in request.callbacks:
            yield Signature.from_dict(data, app), (outcome.value,)
    elif outcome.state == states.FAILURE and request.errbacks:
        for data in request.errbacks:
            sig = Signature.from_dict(data, app)
            if not flow.takes_request(sig):
                yield sig, (request.id,)


def _call_errbacks(task: Task[Any, Any], request: Request, outcome: Outcome) -> None:
    """Run the ``(request, exc, traceback)`` errbacks of a failed task here; logs, never raises."""
    if outcome.state != states.FAILURE or not request.errbacks:
        return
    for data in request.errbacks:
        try:
            errback = Signature.from_dict(data, task.app)
            if flow.takes_request(errback):
                flow.call_errback(errback, request, outcome.exc, outcome.traceback)
        except Exception as exc:
            logger.error("Task %s[%s]: its errback failed: %r", task.name, request.id, exc)


def _store_failed(task: Task[Any, Any], request: Request, outcome: Outcome, exc: Exception) -> None:
    backend = task.app.backend
    doing = f"storing the {outcome.state} result of {task.name}[{request.id}]"
    if backend is not None:
        backend.outage.failed(exc, doing)
    else:  # pragma: no cover - nothing is stored without a backend
        logger.error("%s: %s", doing, exc)


def _submit(
    task: Task[Any, Any], request: Request, outcome: Outcome, meta: ResultMeta
) -> concurrent.futures.Future[None] | None:
    """Hand ``meta`` to the app's write-behind :class:`~celeriac.results.writer.ResultWriter`."""
    writer = task.app.result_writer
    if writer is None:
        return None
    try:
        return writer.submit(meta)
    except Exception as exc:
        _store_failed(task, request, outcome, exc)
        return None


def send_prerun(task: Task[Any, Any], request: Request) -> None:
    signals.task_prerun.send(
        task, task_id=request.id, task=task, args=request.args, kwargs=request.kwargs
    )


def send_outcome_signals(task: Task[Any, Any], request: Request, outcome: Outcome) -> None:
    """task_success / task_failure / task_retry, then task_postrun, in the running thread."""
    if outcome.state == states.SUCCESS:
        signals.task_success.send(task, result=outcome.value, runtime=outcome.runtime)
    elif outcome.state == states.FAILURE:
        exc = outcome.exc
        signals.task_failure.send(
            task,
            task_id=request.id,
            exception=exc,
            args=request.args,
            kwargs=request.kwargs,
            traceback=exc.__traceback__ if exc is not None else None,
            einfo=task_hooks.einfo_of(exc, outcome.traceback),
        )
    elif outcome.state == states.RETRY:
        signals.task_retry.send(
            task,
            request=request,
            reason=outcome.exc,
            einfo=task_hooks.einfo_of(outcome.exc, outcome.traceback),
        )
    signals.task_postrun.send(
        task,
        task_id=request.id,
        task=task,
        args=request.args,
        kwargs=request.kwargs,
        retval=outcome.value if outcome.state == states.SUCCESS else outcome.exc,
        state=outcome.state,
    )


def _report(
    task: Task[Any, Any],
    request: Request,
    outcome: Outcome,
    worker: str | None,
) -> concurrent.futures.Future[None] | None:
    """Log, signal, queue the result and call the task's outcome hooks: what :func:`finish` and
    :func:`afinish` share. Returns the store to wait for when the task is ``acks_late`` (its
    ack must follow the store)."""
    log_outcome(task, request, outcome)
    meta = meta_for(task, request, outcome, worker)
    stored = None
    if meta is not None and task.app.backend is not None and not request.is_eager:
        stored = _submit(task, request, outcome, meta)
    with running(request, task):  # receivers and hooks read self.request, as in Celery
        send_outcome_signals(task, request, outcome)
        if task.hooks and outcome.state != IGNORED:
            task_hooks.after_outcome(
                task, request, outcome.state, outcome.value, outcome.exc, outcome.traceback
            )
    # acks_late: the ack follows the store; a workflow's next move follows it too (a chord
    # join reads the stored results; a chain's later steps must not be stored before this one)
    return stored if task.acks_late or request.chord or request.chain else None


def finish(
    task: Task[Any, Any], request: Request, outcome: Outcome, worker: str | None = None
) -> None:
    """Store the outcome and send ``link``/``link_error`` callbacks. Logs, never raises."""
    _confirm_sends(task, request)  # what the body sent is on the broker before its result is
    callbacks = _callbacks(task, request, outcome)
    stored = _report(task, request, outcome, worker)
    if stored is not None:
        # the message is acked after this returns: the result must be stored by then
        with contextlib.suppress(Exception):  # a failure was logged by the writer
            stored.result()
    try:
        for sig, args in callbacks:
            sig.apply_async(args, parent_id=request.id, root_id=request.root_id or request.id)
    except Exception as exc:
        logger.error("Task %s[%s]: could not send its callbacks: %s", task.name, request.id, exc)
    _call_errbacks(task, request, outcome)
    _advance(task, request, outcome)
    _confirm_sends(task, request)


def _confirm_sends(task: Task[Any, Any], request: Request) -> None:
    """Wait for the broker's confirm of everything this task and its follow-ups sent from sync
    code (pipelined on RabbitMQ, :mod:`celeriac.app.pipeline`), so that the message is acked
    only once they are on the broker, as when each send waited for its own confirm. One that
    cannot be published is logged and kept: the producer tries it again at its next send."""
    try:
        task.app.producer.flush()
    except Exception as exc:
        logger.error(
            "Task %s[%s]: what it sent is not all on the broker yet: %s", task.name, request.id, exc
        )


def _advance(task: Task[Any, Any], request: Request, outcome: Outcome) -> None:
    """The workflow's next move (chain step, chord join, failure of what follows), if any."""
    if request.chain or request.chord:
        flow.advance(
            task.app, request, _final_state(outcome), outcome.value, outcome.exc, outcome.traceback
        )


def _final_state(outcome: Outcome) -> str:
    """A requeued rejection is not an end: the message runs again."""
    return IGNORED if outcome.settle == "requeue" else outcome.state


async def afinish(
    task: Task[Any, Any], request: Request, outcome: Outcome, worker: str | None = None
) -> None:
    """The async twin of :func:`finish`: waits for the result writer and sends callbacks with
    ``asend_task``, so an event loop running many tasks never blocks on the backend or broker."""
    app = task.app
    callbacks = _callbacks(task, request, outcome)
    stored = _report(task, request, outcome, worker)
    if stored is not None:
        with contextlib.suppress(Exception):  # a failure was logged by the writer
            await asyncio.wrap_future(stored)
    try:
        for sig, args in callbacks:
            ids: dict[str, Any] = {
                "parent_id": request.id,
                "root_id": request.root_id or request.id,
            }
            if sig.subtask_type is not None:  # a workflow as callback: sent from a thread
                await asyncio.to_thread(functools.partial(sig.apply_async, args, **ids))
                continue
            call = sig.clone(args, **ids)
            await app.asend_task(call.task, call.args, dict(call.kwargs), **dict(call.options))
    except Exception as exc:
        logger.error("Task %s[%s]: could not send its callbacks: %s", task.name, request.id, exc)
    if outcome.state == states.FAILURE and request.errbacks:
        await asyncio.to_thread(_call_errbacks, task, request, outcome)
    if request.chain or request.chord:
        await asyncio.to_thread(_advance, task, request, outcome)


def run_request(task: Task[Any, Any], request: Request, worker: str | None = None) -> Outcome:
    """Execute and finish: what a pool thread or child runs for one message."""
    outcome = execute(task, request)
    finish(task, request, outcome, worker)
    return outcome


async def arun_request(
    task: Task[Any, Any],
    request: Request,
    worker: str | None = None,
    guard: CoroutineGuard | None = None,
) -> Outcome:
    """The async twin of :func:`run_request` for ``async def`` tasks (the asyncio pool)."""
    outcome = await aexecute(task, request, guard)
    await afinish(task, request, outcome, worker)
    return outcome
