"""Taskiq's benchmark tasks, run by ``taskiq worker bench_taskiq_app:broker``.

``ListQueueBroker`` (LPUSH/BRPOP): unlike ``RedisStreamBroker``, whose consumer group starts at
``$`` and so skips what was queued before the worker came up, it drains a queue filled in
advance. Taskiq is async-first: tasks are ``async def`` and INCR with redis.asyncio. The result
backend stores every task's result (taskiq has no per-task opt-out), with a 10 min expiry.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from common import COUNTER, IO_SLEEP, redis_url
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

broker = ListQueueBroker(url=redis_url()).with_result_backend(
    RedisAsyncResultBackend(redis_url=redis_url(), result_ex_time=600)
)

_client: aioredis.Redis | None = None


def client() -> aioredis.Redis:
    """One async client per worker process (one event loop each)."""
    global _client
    if _client is None:
        _client = aioredis.Redis.from_url(redis_url())
    return _client


@broker.task(task_name="noop")
async def noop() -> None:
    await client().incr(COUNTER)


@broker.task(task_name="ping")
async def ping() -> int:
    return int(await client().incr(COUNTER))


@broker.task(task_name="io")
async def io() -> None:
    await asyncio.sleep(IO_SLEEP)
    await client().incr(COUNTER)
