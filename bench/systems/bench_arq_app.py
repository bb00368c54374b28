"""arq's benchmark jobs, run by ``arq bench_arq_app.WorkerSettings`` (or ``IOWorkerSettings``).

arq is asyncio-only, so every job is ``async def`` and INCRs through the worker's own pool
(``ctx["redis"]``, the same database). arq polls its queue (a sorted set) every ``poll_delay``
seconds, 0.5 by default; at that default 500 sequential round trips take minutes, so the bench
sets 0.01 s, which also shows in arq's idle CPU.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from arq import func
from arq.connections import RedisSettings
from common import COUNTER, IO_SLEEP, redis_url

POLL_DELAY = 0.01


async def noop(ctx: dict[str, Any]) -> None:
    await ctx["redis"].incr(COUNTER)


async def ping(ctx: dict[str, Any]) -> int:
    return int(await ctx["redis"].incr(COUNTER))


async def io(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(IO_SLEEP)
    await ctx["redis"].incr(COUNTER)


def settings() -> RedisSettings:
    return RedisSettings.from_dsn(redis_url())


class WorkerSettings:
    """Concurrency 2: at most two jobs at once."""

    functions: ClassVar[list[Any]] = [
        func(noop, keep_result=0),
        func(ping, keep_result=600),
        func(io, keep_result=0),
    ]
    redis_settings = settings()
    max_jobs = 2
    poll_delay = POLL_DELAY


class IOWorkerSettings:
    """I/O concurrency 100: a hundred jobs awaiting at once on the worker's loop. (arq reads a
    settings class's own ``__dict__``, so nothing here may be inherited.)"""

    functions = WorkerSettings.functions
    redis_settings = WorkerSettings.redis_settings
    max_jobs = 100
    poll_delay = POLL_DELAY
