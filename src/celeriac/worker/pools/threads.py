"""The ``threads`` and ``solo`` pools: tasks run in threads of this process.

``async def`` tasks run on each thread's own event loop, created once per thread
(:func:`~celeriac.execution.executor.thread_loop`). ``solo`` is a single thread: one task at a time,
while the worker's event loop stays free to renew leases and answer signals.

Time limits, and what they can and cannot do here
--------------------------------------------------
Python cannot kill a thread. So:

* **Soft limit, sync task**: the pool raises :class:`~celeriac.errors.SoftTimeLimitExceeded` inside
  the task's thread (:func:`~celeriac.worker.timelimits.async_raise`). It fires at the thread's
  next bytecode: at once in pure-Python code, but only *after* a long C call returns
  (``time.sleep(60)``, ``Event.wait()``, a blocking socket read, a C extension's kernel). The task
  may catch it to clean up; a blanket ``except Exception`` catches it too.
* **Soft limit, async task**: its coroutine is cancelled on the thread's loop
  (:class:`~celeriac.worker.timelimits.CoroutineGuard`).
* **Hard limit**: at the limit the pool stores FAILURE with
  :class:`~celeriac.errors.TimeLimitExceeded` (its traceback is the stuck thread's stack at that
  moment), sends the errbacks, returns the outcome so the message is settled, and *abandons* the
  thread: a fresh thread takes its place, so the pool keeps its full size, and whatever the
  abandoned task returns later is dropped (nothing is stored over the FAILURE), after which that
  thread exits. The pool also raises ``TimeLimitExceeded`` in the abandoned thread, which stops
  pure-Python code at its next bytecode. What it **cannot** do: stop code blocked in C, or undo
  anything. The runaway code keeps running, using CPU, holding its locks, connections, files and
  memory, and may still cause side effects after its FAILURE was recorded; every hard limit that
  fires on blocked code leaves one more thread behind until that code returns. When hard limits
  must really stop code, use the ``prefork`` pool, which kills the child process.

Threads are daemon threads: an abandoned thread never keeps the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import sys
import threading
import time
import traceback as tb
from collections.abc import Collection, Container
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.context import Request
from celeriac.errors import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded
from celeriac.execution.executor import Outcome, afinish, execute_with, finish
from celeriac.utils.loops import close_thread_loop, thread_loop
from celeriac.worker import timelimits
from celeriac.worker.pools.base import OnStart, Pool, PoolOptions, effective_time_limits

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

#: An async task's own loop enforces its hard limit by cancellation; the pool abandons its thread
#: only when that loop is blocked (a coroutine that does not await) this long past the limit.
ASYNC_BACKSTOP = 0.25

_QUEUED, _RUNNING, _FINISHING, _ABANDONED, _DROPPED = range(5)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class _Job:
    """One request handed to a pool thread; its ``phase`` (under ``lock``) decides who finishes it:
    the thread (stores the outcome) or the event loop (abandons the thread at the hard limit)."""

    __slots__ = (
        "future",
        "hard",
        "ident",
        "lock",
        "loop",
        "on_start",
        "phase",
        "request",
        "revoked",
        "soft",
        "soft_fired",
        "started",
        "started_at",
        "task",
        "thread",
        "worker",
    )

    def __init__(
        self,
        task: Task[Any, Any],
        request: Request,
        worker: str | None,
        hard: float | None,
        soft: float | None,
        loop: asyncio.AbstractEventLoop,
        on_start: OnStart | None = None,
    ) -> None:
        self.on_start = on_start
        self.revoked: Container[str] = frozenset()
        self.task = task
        self.request = request
        self.worker = worker
        self.hard = hard
        self.soft = timelimits.effective_soft(hard, soft)
        self.loop = loop
        self.future: asyncio.Future[Outcome] = loop.create_future()
        limited = hard is not None or self.soft is not None
        self.started: asyncio.Future[None] | None = loop.create_future() if limited else None
        self.lock = threading.Lock()
        self.phase = _QUEUED
        self.ident = 0
        self.thread: threading.Thread | None = None
        self.started_at = 0.0
        self.soft_fired = False

    # -- in the pool thread -----------------------------------------------------------------------
    def run(self) -> bool:
        """Run, store and report the request; False if the loop abandoned it (the thread that
        ran it was replaced and must retire)."""
        self.ident = threading.get_ident()
        self.thread = threading.current_thread()
        self.started_at = time.monotonic()
        with self.lock:
            if self.phase == _DROPPED:  # its caller went away while it was queued
                return True
            self.phase = _RUNNING
        if self.started is not None:
            self._report(self.started, None, None)
        if self.request.id in self.revoked:  # revoked while it waited in the pool's queue
            revoked = Outcome(states.REVOKED, exc=TaskRevokedError("revoked"), reason="revoked")
            if self._close():
                finish(self.task, self.request, revoked, self.worker)
                self._report(self.future, revoked, None)
            return True
        if self.on_start is not None:
            self.loop.call_soon_threadsafe(self.on_start)
        outcome: Outcome | None = None
        try:
            outcome = execute_with(self.task, self.request, self._call)
        except timelimits.LIMIT_ERRORS as exc:
            if outcome is None:  # fired after the task returned but before execute did
                outcome = Outcome(states.FAILURE, exc=exc)
        except BaseException as exc:  # not a task failure (SystemExit...): hand it to the caller
            if self._close():
                self._report(self.future, None, exc)
                return True
            return False
        if not self._close():
            logger.warning(
                "Task %s[%s] returned after its hard time limit; its %s is dropped",
                self.task.name,
                self.request.id,
                outcome.state,
            )
            return False
        self._name_soft_limit(outcome)
        finish(self.task, self.request, outcome, self.worker)
        self._report(self.future, outcome, None)
        return True

    def _call(self, task: Task[Any, Any], request: Request) -> Any:
        result = task(*request.args, **request.kwargs)
        if not task.is_async:
            return result
        if self.hard is None and self.soft is None:
            return thread_loop().run_until_complete(result)
        guard = timelimits.CoroutineGuard(self.hard, self.soft)
        return thread_loop().run_until_complete(guard.run(result))

    def _close(self) -> bool:
        """Leave the running phase; False if the loop abandoned the job first.

        A limit exception raised into this thread fires at its next bytecode, which may be here,
        after the task returned; absorb it and make sure none is left pending for the next job.
        """
        while True:
            try:
                with self.lock:
                    abandoned = self.phase == _ABANDONED
                    if not abandoned:
                        self.phase = _FINISHING
                timelimits.clear_async_exc(self.ident)
                return not abandoned
            except timelimits.LIMIT_ERRORS:
                continue

    def _name_soft_limit(self, outcome: Outcome) -> None:
        """The C API raises the bare class; give the stored exception its message."""
        exc = outcome.exc
        if self.soft_fired and isinstance(exc, SoftTimeLimitExceeded) and not exc.args:
            assert self.soft is not None
            exc.args = (timelimits.soft_message(self.soft),)
            outcome.traceback = "".join(tb.format_exception(exc))

    def _report(self, future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(_resolve, future, value, error)

    # -- on the event loop ------------------------------------------------------------------------
    def raise_soft(self) -> None:
        with self.lock:
            if self.phase == _RUNNING and not self.soft_fired:
                self.soft_fired = timelimits.async_raise(self.ident, SoftTimeLimitExceeded)

    def abandon(self) -> str | None:
        """Take the job from its thread if the task is still running; returns that thread's
        stack, or None when the task already returned (its thread finishes it)."""
        with self.lock:
            if self.phase != _RUNNING:
                return None
            self.phase = _ABANDONED
            frame = sys._current_frames().get(self.ident)
            # Best effort, under the lock so it can never hit the thread's next job.
            timelimits.async_raise(self.ident, TimeLimitExceeded)
        return "".join(tb.format_stack(frame)) if frame is not None else ""

    def drop(self) -> bool:
        """The caller went away: a job still queued is never started. True if it was queued."""
        with self.lock:
            if self.phase == _QUEUED:
                self.phase = _DROPPED
                return True
            return False


class TaskThreads:
    """A fixed number of daemon threads running requests under time limits.

    It replaces each thread whose job it abandons, so ``size`` threads always serve; the
    abandoned one exits when its task finally returns. Jobs beyond ``size`` wait in a FIFO queue
    (the asyncio pool relies on that); a job's limits start when a thread picks it up.
    """

    def __init__(self, size: int, name: str, revoked: Container[str] = frozenset()) -> None:
        self.size = size
        self.name = name
        self.revoked = revoked
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._serving: set[threading.Thread] = set()
        self._stuck: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._closed = False
        self._jobs: dict[str, _Job] = {}  # by request id, while run() awaits them (loop only)

    def start(self) -> None:
        for _ in range(self.size):
            self._spawn()

    @property
    def abandoned(self) -> int:
        """Threads still running a task abandoned at its hard limit."""
        with self._lock:
            self._stuck = {t for t in self._stuck if t.is_alive()}  # drop those that retired
            return len(self._stuck)

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"{self.name}-{next(self._numbers)}", daemon=True
        )
        with self._lock:
            self._serving.add(thread)
        thread.start()

    def _serve(self) -> None:
        me = threading.current_thread()
        try:
            while not self._closed:
                job = self._queue.get()
                if job is None or self._closed:
                    break
                if not job.run():
                    break
        finally:
            with self._lock:
                self._serving.discard(me)
                self._stuck.discard(me)
            close_thread_loop()

    async def run(
        self,
        task: Task[Any, Any],
        request: Request,
        worker: str | None,
        hard: float | None,
        soft: float | None,
        on_start: OnStart | None = None,
    ) -> Outcome:
        """Run one request in a thread and return its outcome, at the latest at the hard limit."""
        job = _Job(task, request, worker, hard, soft, asyncio.get_running_loop(), on_start)
        job.revoked = self.revoked
        self._jobs[request.id] = job
        self._queue.put(job)
        try:
            if job.started is None:
                return await job.future
            await job.started
            soft_here = job.soft is not None and not task.is_async  # async: its loop cancels it
            if soft_here and not await _wait(job.future, job.started_at + (job.soft or 0.0)):
                job.raise_soft()
            if job.hard is not None:
                backstop = ASYNC_BACKSTOP if task.is_async else 0.0
                if not await _wait(job.future, job.started_at + job.hard + backstop):
                    stack = job.abandon()
                    if stack is not None:
                        return await self._abandoned(job, stack)
            return await job.future
        except asyncio.CancelledError:
            job.drop()
            raise
        finally:
            if self._jobs.get(request.id) is job:
                del self._jobs[request.id]

    def withdraw(self, task_ids: Collection[str]) -> set[str]:
        """Take back requests still queued (no thread started them): they will never run."""
        withdrawn: set[str] = set()
        for task_id in task_ids:
            job = self._jobs.get(task_id)
            if job is not None and job.drop():
                withdrawn.add(task_id)
        return withdrawn

    async def _abandoned(self, job: _Job, stack: str) -> Outcome:
        """The hard limit passed with the task still running: replace its thread, record FAILURE."""
        assert job.hard is not None
        assert job.thread is not None
        with self._lock:
            self._serving.discard(job.thread)
            self._stuck.add(job.thread)
        self._spawn()
        exc = TimeLimitExceeded(timelimits.hard_message(job.hard))
        outcome = Outcome(
            states.FAILURE,
            exc=exc,
            traceback=(
                f"Stack of thread {job.thread.name!r}, abandoned at the hard time limit "
                f"(most recent call last):\n{stack}{tb.format_exception_only(exc)[-1]}"
            ),
            runtime=time.monotonic() - job.started_at,
        )
        logger.warning(
            "Task %s[%s]: hard time limit (%gs) exceeded; thread %s abandoned (%d stuck so far)",
            job.task.name,
            job.request.id,
            job.hard,
            job.thread.name,
            self.abandoned,
        )
        await afinish(job.task, job.request, outcome, job.worker)
        return outcome

    def resize(self, size: int) -> None:
        """Grow now; shrink as threads finish their current task."""
        size = max(1, size)
        grow, self.size = size - self.size, size
        for _ in range(grow):
            self._spawn()
        for _ in range(-grow):
            self._queue.put(None)

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Let each serving thread exit after its task (blocks when ``wait``); ``wait=False`` also
        drops queued jobs. Threads stuck in abandoned tasks are never waited for."""
        if not wait:
            self._closed = True
        with self._lock:
            serving = list(self._serving)
        for _ in serving:
            self._queue.put(None)
        if wait:
            for thread in serving:
                thread.join(timeout)


async def _wait(future: asyncio.Future[Outcome], deadline: float) -> bool:
    """Wait for ``future`` until the monotonic ``deadline``; True if it is done (never cancels)."""
    remaining = deadline - time.monotonic()
    if remaining > 0 and not future.done():
        await asyncio.wait((future,), timeout=remaining)
    return future.done()


class ThreadPool(Pool):
    """``concurrency`` threads; see the module docstring for time limits."""

    name = "threads"
    depth = 2

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        hostname: str,
        options: PoolOptions | None = None,
    ) -> None:
        super().__init__(app, concurrency, hostname, options)
        self._threads: TaskThreads | None = None

    @property
    def threads(self) -> TaskThreads:
        assert self._threads is not None, "pool not started"
        return self._threads

    async def start(self) -> None:
        self._threads = TaskThreads(self.concurrency, f"celeriac-{self.name}", self.revoked)
        self._threads.start()

    async def run(
        self, task: Task[Any, Any], request: Request, on_start: OnStart | None = None
    ) -> Outcome:
        hard, soft = effective_time_limits(task, request, self.options)
        return await self.threads.run(task, request, self.hostname, hard, soft, on_start)

    def withdraw(self, task_ids: Collection[str]) -> set[str]:
        return self.threads.withdraw(task_ids)

    async def resize(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self.threads.resize(self.concurrency)

    async def stop(self, wait: bool = True) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            if wait:
                await asyncio.to_thread(threads.stop, True)
            else:
                threads.stop(wait=False)


class SoloPool(ThreadPool):
    """One thread, one task at a time; it does not resize."""

    name = "solo"

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        hostname: str,
        options: PoolOptions | None = None,
    ) -> None:
        super().__init__(app, 1, hostname, options)

    async def resize(self, concurrency: int) -> None:
        logger.debug("the solo pool has one thread; resize to %d ignored", concurrency)
