"""celeriac's benchmark tasks, imported by ``celeriac -A bench_celeriac_app worker``.

``noop`` and ``io`` ignore their results (fire-and-forget, as drain and io measure the queue, not
the result store); ``ping`` keeps its result for the round trip. ``io`` is an ``async def`` task:
celeriac's best I/O mode is its asyncio pool.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from common import COUNTER, IO_SLEEP, broker_url, incr, redis_url

from celeriac import Celeriac

# On RabbitMQ a queue of its own: celeriac declares its queues with priorities (its default) and
# Celery's row, on the same vhost, declares "celery" without; RabbitMQ refuses a second
# declaration with other arguments, so the two rows must not share a queue name.
QUEUE = "celeriac" if broker_url().startswith("amqp") else "celery"

app = Celeriac("bench", broker=broker_url(), backend=redis_url(), task_default_queue=QUEUE)

_aclient: aioredis.Redis | None = None


def aclient() -> aioredis.Redis:
    """One async client per process: the asyncio pool runs every async task on one loop."""
    global _aclient
    if _aclient is None:
        _aclient = aioredis.Redis.from_url(redis_url())
    return _aclient


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    incr()


@app.task(name="bench.ping")
def ping() -> int:
    return incr()


@app.task(name="bench.io", ignore_result=True)
async def io() -> None:
    await asyncio.sleep(IO_SLEEP)
    await aclient().incr(COUNTER)
