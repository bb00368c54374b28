"""The ``threads`` and ``solo`` pools: tasks run in threads of this process.

``async def`` tasks run on each thread's own event loop, created once per thread. A thread
cannot be killed from outside, so in these pools a hard time limit can only be noticed, not
enforced; use the prefork pool when hard limits must stop runaway code.
``solo`` is a single thread: one task at a time, the event loop stays free to renew leases and
answer signals while it runs.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from celeriac.context import Request
from celeriac.worker.executor import Outcome, run_request
from celeriac.worker.pools.base import Pool, PoolOptions

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task


class ThreadPool(Pool):
    name = "threads"

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        hostname: str,
        options: PoolOptions | None = None,
    ) -> None:
        super().__init__(app, concurrency, hostname, options)
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"celeriac-{self.name}"
        )

    async def run(self, task: Task[Any, Any], request: Request) -> Outcome:
        assert self._executor is not None, "pool not started"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, run_request, task, request, self.hostname)

    async def stop(self, wait: bool = True) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            if wait:
                await asyncio.to_thread(executor.shutdown, True)
            else:
                executor.shutdown(wait=False, cancel_futures=True)


class SoloPool(ThreadPool):
    name = "solo"

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        hostname: str,
        options: PoolOptions | None = None,
    ) -> None:
        super().__init__(app, 1, hostname, options)
