"""Dramatiq's benchmark actors, imported by ``dramatiq bench_dramatiq_app``.

Results are stored only for ``ping`` (``store_results=True``), as in every system.
"""

from __future__ import annotations

import time

import dramatiq
from common import IO_SLEEP, incr, redis_url
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

broker = RedisBroker(url=redis_url())
broker.add_middleware(Results(backend=RedisBackend(url=redis_url())))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop")
def noop() -> None:
    incr()


@dramatiq.actor(actor_name="ping", store_results=True)
def ping() -> int:
    return incr()


@dramatiq.actor(actor_name="io")
def io() -> None:
    time.sleep(IO_SLEEP)
    incr()
