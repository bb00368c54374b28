"""The ``asyncio`` pool: many tasks at once on the worker's own event loop.

``async def`` tasks run as asyncio tasks on the loop that awaits :meth:`AsyncioPool.run` (the
worker's), so ``-c 1000`` means up to a thousand tasks awaiting I/O together in one thread,
with no thread or process per task. Their results are stored and their callbacks sent with the
async twins (``backend.astore``, ``app.asend_task``), so finishing a task never blocks the loop.

Sync tasks must not block that loop: they run in a bounded set of threads
(``min(32, concurrency)``, see :data:`SYNC_THREADS_MAX`) shared by all sync tasks of this
worker; beyond that they wait their turn, and their time limits start when a thread picks them up.
They get the threads pool's limits (see :mod:`celeriac.worker.pools.threads`).

What the loop asks of task code: an ``async def`` task must await to let others run. One that
computes for a second, or calls blocking code (``time.sleep``, ``requests``, a sync DB driver,
``result.get()``), stalls every task of the worker, its lease renewals and its heartbeats, and no
time limit can interrupt it (cancellation lands only at an ``await``). Put such work in a sync task
or ``await asyncio.to_thread(...)``. Sending from inside a task: prefer ``await t.adelay(...)``;
``t.delay(...)`` publishes synchronously from the loop.

Time limits of ``async def`` tasks (:class:`~celeriac.worker.timelimits.CoroutineGuard`): the soft
limit cancels the task (FAILURE with ``SoftTimeLimitExceeded`` if it ends cancelled; if it catches
``CancelledError`` and returns, that is its result); the hard limit cancels it again and stops
awaiting it (FAILURE with ``TimeLimitExceeded`` even if it swallows the cancellation; it then
runs on unobserved until it ends). :meth:`AsyncioPool.terminate` cancels a running async task and
records REVOKED; it cannot stop a sync task running in a thread (it returns False for those).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from celeriac.context import Request
from celeriac.execution.executor import Outcome, arun_request
from celeriac.worker import timelimits
from celeriac.worker.pools.base import OnStart, Pool, PoolOptions, effective_time_limits
from celeriac.worker.pools.threads import TaskThreads

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task

logger = logging.getLogger("celeriac.worker")

#: At most this many threads for sync tasks, whatever the concurrency: past it, more threads
#: only contend for the GIL.
SYNC_THREADS_MAX = 32


class AsyncioPool(Pool):
    """Runs ``async def`` tasks on the worker's loop and sync tasks in a few threads."""

    name = "asyncio"
    #: Seconds :meth:`stop` gives tasks abandoned at a hard limit to honour a last cancellation.
    reap_grace = 1.0

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        hostname: str,
        options: PoolOptions | None = None,
    ) -> None:
        super().__init__(app, concurrency, hostname, options)
        self._threads: TaskThreads | None = None
        self._guards: dict[str, timelimits.CoroutineGuard] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _thread_count(self) -> int:
        return max(1, min(SYNC_THREADS_MAX, self.concurrency))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = TaskThreads(
            self._thread_count(), f"celeriac-{self.name}-sync", self.revoked
        )
        self._threads.start()

    async def run(
        self, task: Task[Any, Any], request: Request, on_start: OnStart | None = None
    ) -> Outcome:
        hard, soft = effective_time_limits(task, request, self.options)
        if not task.is_async:
            assert self._threads is not None, "pool not started"
            return await self._threads.run(task, request, self.hostname, hard, soft, on_start)
        if on_start is not None:
            on_start()
        guard = timelimits.CoroutineGuard(hard, soft)
        self._guards[request.id] = guard
        try:
            return await arun_request(task, request, self.hostname, guard)
        finally:
            if self._guards.get(request.id) is guard:
                del self._guards[request.id]

    async def terminate(self, task_id: str) -> bool:
        """Cancel the running ``async def`` task ``task_id``: it ends REVOKED at once, whatever
        it does with the cancellation. Sync tasks (in threads) cannot be stopped: False."""
        guard = self._guards.get(task_id)
        if guard is None or not guard.terminate():
            return False
        logger.info("Task %s terminated", task_id)
        return True

    def withdraw(self, task_ids: Collection[str]) -> set[str]:
        return self._threads.withdraw(task_ids) if self._threads is not None else set()

    async def resize(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        if self._threads is not None:
            self._threads.resize(self._thread_count())

    async def stop(self, wait: bool = True) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            if wait:
                await asyncio.to_thread(threads.stop, True)
            else:
                threads.stop(wait=False)
        if self._loop is asyncio.get_running_loop():
            await timelimits.reap(self._loop, self.reap_grace)
