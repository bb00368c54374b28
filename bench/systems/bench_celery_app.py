"""Celery's benchmark tasks, imported by ``celery -A bench_celery_app worker``.

The same shape as every system's: ``noop`` and ``io`` INCR the counter and ignore their results,
``ping`` keeps its result for the round trip. ``io`` sleeps with ``time.sleep``: under the gevent
pool it is patched into a cooperative sleep, under threads it releases the GIL.
"""

from __future__ import annotations

import time

from celery import Celery
from common import IO_SLEEP, broker_url, incr, redis_url

app = Celery("bench", broker=broker_url(), backend=redis_url())
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
)


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    incr()


@app.task(name="bench.ping")
def ping() -> int:
    return incr()


@app.task(name="bench.io", ignore_result=True)
def io() -> None:
    time.sleep(IO_SLEEP)
    incr()
