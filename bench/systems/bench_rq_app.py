"""RQ's benchmark jobs, run by ``rq worker-pool`` (RQ has no task decorator: jobs are plain
functions referenced by import path). ``noop`` and ``io`` are enqueued with ``result_ttl=0``
(results dropped), ``ping`` keeps its result for the round trip.
"""

from __future__ import annotations

import time

from common import IO_SLEEP, counter, incr
from rq import Queue

QUEUE = "default"


def queue() -> Queue:
    return Queue(QUEUE, connection=counter())


def noop() -> None:
    incr()


def ping() -> int:
    return incr()


def io() -> None:
    time.sleep(IO_SLEEP)
    incr()
