"""Huey's benchmark tasks, run by ``huey_consumer bench_huey_app.huey``.

``RedisHuey`` with ``notify_result=True``: a result waiter blocks on the result key (BLPOP)
instead of polling with back-off, Huey's lowest-latency option. Huey stores a result only when a
task returns something other than None, so ``noop`` and ``io`` store nothing and ``ping`` does.
"""

from __future__ import annotations

import time

from common import IO_SLEEP, incr, redis_url
from huey import RedisHuey

huey = RedisHuey("bench", url=redis_url(), notify_result=True)


@huey.task(name="noop")
def noop() -> None:
    incr()


@huey.task(name="ping")
def ping() -> int:
    return incr()


@huey.task(name="io")
def io() -> None:
    time.sleep(IO_SLEEP)
    incr()
