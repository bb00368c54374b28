"""Time-limit tools shared by the pools: interrupt a thread, and guard a coroutine.

Two mechanisms, because Python offers no single one that works everywhere:

* **A thread** (sync tasks in the threads, solo and asyncio pools) can only be *asked* to stop:
  :func:`async_raise` schedules an exception in it with ``PyThreadState_SetAsyncExc``. The
  interpreter raises it at that thread's next bytecode boundary, so pure-Python code (a loop, a
  parser) sees it within microseconds, but code inside one long C call (``time.sleep``, a lock or
  ``Event.wait``, a socket read, a NumPy kernel) sees it only when that call returns. It is
  raised where the thread happens to be, so ``except Exception`` in the task can catch it.
* **A coroutine** (``async def`` tasks) is stopped by cancelling its asyncio task:
  :class:`CoroutineGuard` runs it as a task of its own, cancels it at the soft limit (the
  ``CancelledError`` reaches its current ``await``; if it ends cancelled the run fails with
  :class:`~celeriac.errors.SoftTimeLimitExceeded`, if it catches the cancellation and returns,
  that value is its result), and at the hard limit cancels it again and stops awaiting it (the
  run fails with :class:`~celeriac.errors.TimeLimitExceeded` even if the task swallows the
  cancellation; it then runs on, unobserved, until it ends). A coroutine that never awaits cannot
  be cancelled at all: it blocks its event loop, and only the threads pool's hard limit (which
  abandons the whole thread) gets past it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from celeriac.errors import (
    SoftTimeLimitExceeded,
    TaskError,
    Terminated,
    TimeLimitExceeded,
)

logger = logging.getLogger("celeriac.worker")

T = TypeVar("T")

#: Exceptions a pool raises into a thread; the pool's own code must absorb a late one.
LIMIT_ERRORS: tuple[type[BaseException], ...] = (SoftTimeLimitExceeded, TimeLimitExceeded)

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


def soft_message(seconds: float) -> str:
    return f"soft time limit ({seconds:g}s) exceeded"


def hard_message(seconds: float) -> str:
    return f"hard time limit ({seconds:g}s) exceeded"


def effective_soft(hard: float | None, soft: float | None) -> float | None:
    """A soft limit at or past the hard one can never fire first: it is dropped (Celery's rule)."""
    if soft is None or (hard is not None and soft >= hard):
        return None
    return soft


def async_raise(ident: int, exc_type: type[BaseException]) -> bool:
    """Schedule ``exc_type()`` in the thread ``ident`` (see the module docstring for when it
    fires). The C API takes a class, not an instance: the exception is raised without arguments.
    True if exactly one thread was found."""
    changed = int(_set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exc_type)))
    if changed > 1:  # cannot happen for a valid ident; the C API asks us to undo it
        _set_async_exc(ctypes.c_ulong(ident), None)
        return False
    return changed == 1


class _Withdrawn(BaseException):
    """Takes a pending limit exception's place, so that it fires, and is absorbed, at once."""


def clear_async_exc(ident: int) -> None:
    """Withdraw an exception scheduled by :func:`async_raise` that has not fired yet.

    In the thread itself a marker replaces it and is absorbed here, which also lowers
    CPython's process-wide "async exception pending" flag: withdrawing with NULL leaves it
    raised, so every thread's interpreter loop takes its slow path for ever after (under a
    tracer such as coverage.py an in-process worker crawled until it ran nothing)."""
    if ident != threading.get_ident():
        _set_async_exc(ctypes.c_ulong(ident), None)
        return
    try:
        _set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(_Withdrawn))
        for _ in range(3):  # backward jumps: the interpreter's check points, where it fires
            pass
    except _Withdrawn:
        pass


# Tasks past their hard limit (or terminated) that ignored cancellation still run on their loop;
# asyncio keeps only weak references to tasks, so hold them here until they end.
_abandoned: set[asyncio.Task[Any]] = set()
_abandoned_lock = threading.Lock()


def _forget(task: asyncio.Task[Any]) -> None:
    with _abandoned_lock:
        _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # mark it retrieved: nobody awaits an abandoned task


def abandon(task: asyncio.Task[Any]) -> None:
    """Stop caring about ``task``: keep it alive until it ends, then drop its outcome."""
    if task.done():
        _forget(task)
        return
    with _abandoned_lock:
        _abandoned.add(task)
    task.add_done_callback(_forget)


def abandoned_tasks(loop: asyncio.AbstractEventLoop) -> list[asyncio.Task[Any]]:
    """The abandoned tasks still running on ``loop`` (a pool reaps them when it stops)."""
    with _abandoned_lock:
        return [t for t in _abandoned if t.get_loop() is loop and not t.done()]


async def reap(loop: asyncio.AbstractEventLoop, grace: float) -> int:
    """Cancel the abandoned tasks on ``loop`` and give them ``grace`` seconds to end.

    ``asyncio.run`` cancels every task left when it returns and waits for all of them, so one task
    that swallows every cancellation would hang the worker's shutdown; those still running after
    ``grace`` are unregistered from asyncio (a private hook; skipped if this Python lacks it) and
    die with their loop. Returns how many refused to end.
    """
    tasks = abandoned_tasks(loop)
    if not tasks:
        return 0
    for task in tasks:
        task.cancel("worker stopping")
    _, still = await asyncio.wait(tasks, timeout=grace)
    unregister = getattr(asyncio.tasks, "_unregister_task", None)
    for task in still:
        logger.warning("an abandoned task ignores cancellation; it dies with the worker: %r", task)
        if unregister is not None:
            unregister(task)
    return len(still)


class CoroutineGuard:
    """Runs one coroutine under soft and hard limits; :meth:`terminate` stops it early.

    Use one guard per run, on the loop that runs it. ``terminate`` and the limits end the run at
    once (they never wait for the coroutine to handle its cancellation), so a slot is freed on
    time whatever the task does with the ``CancelledError``.
    """

    __slots__ = ("_inner", "_soft_fired", "_terminated", "_wake", "hard", "soft")

    def __init__(self, hard: float | None = None, soft: float | None = None) -> None:
        self.hard = hard
        self.soft = effective_soft(hard, soft)
        self._inner: asyncio.Task[Any] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._soft_fired = False
        self._terminated = False

    @property
    def terminated(self) -> bool:
        return self._terminated

    @property
    def soft_fired(self) -> bool:
        return self._soft_fired

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """The coroutine's value; or raises its exception, ``SoftTimeLimitExceeded``,
        ``TimeLimitExceeded``, or ``TaskRevokedError("terminated")``."""
        loop = asyncio.get_running_loop()
        inner = self._inner = loop.create_task(coro)  # copies the context: the request too
        wake = self._wake = loop.create_future()
        start = loop.time()
        try:
            if self.soft is not None:
                await _until(inner, wake, start + self.soft, loop)
                if not inner.done() and not wake.done():
                    self._soft_fired = inner.cancel(soft_message(self.soft))
            if not inner.done() and not wake.done():
                await _until(inner, wake, None if self.hard is None else start + self.hard, loop)
        except asyncio.CancelledError:  # the caller is cancelled (cold shutdown): so is the task
            inner.cancel()
            abandon(inner)
            raise
        if self._terminated:
            abandon(inner)
            raise Terminated("terminated")
        if not inner.done():
            assert self.hard is not None
            inner.cancel(hard_message(self.hard))
            abandon(inner)
            raise TimeLimitExceeded(hard_message(self.hard))
        if inner.cancelled():
            if self._soft_fired:
                assert self.soft is not None
                raise SoftTimeLimitExceeded(soft_message(self.soft))
            # Cancelled by its own code: a failure, never a cancellation of the worker's code.
            raise TaskError("the task was cancelled (not by a time limit or terminate)")
        result: T = inner.result()
        return result

    def terminate(self) -> bool:
        """Cancel the running coroutine and end the run as revoked; False if it is not running."""
        inner, wake = self._inner, self._wake
        if inner is None or wake is None or inner.done() or self._terminated:
            return False
        self._terminated = True
        inner.cancel("terminated")
        if not wake.done():
            wake.set_result(None)
        return True


async def _until(
    inner: asyncio.Task[Any],
    wake: asyncio.Future[None],
    deadline: float | None,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Wait until ``inner`` ends, ``wake`` is set, or the loop clock passes ``deadline``."""
    timeout = None if deadline is None else max(0.0, deadline - loop.time())
    await asyncio.wait((inner, wake), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
