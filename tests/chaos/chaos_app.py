"""The app the chaos suite's workers and producer share: two tasks that record every run.

Workers import it (``-A chaos_app``) and build the app from the environment:
``CHAOS_BROKER`` (the URL, through the fault proxy for Redis and RabbitMQ), ``CHAOS_OPTIONS``
(transport options as JSON: a short lease, a key prefix of the run's own), ``CHAOS_QUEUE`` (a
queue of the run's own), ``CHAOS_RECORD`` (the run's append-only record), ``CHAOS_STALL``
(the fetch watchdog's threshold in seconds, when the setting exists).

Each task appends ``start <seq> <pid> <ppid> <time>`` when it begins and ``done ...`` when it
ends, each a single ``O_APPEND`` write (atomic between processes for a short line), so
the record says, per task, how many runs finished and which processes ran it: a prefork child's
parent is its worker, so a fault on either is found. ``chaos.late`` acks late and rejects on a
lost worker (a run that dies comes back: the one case where a duplicate is allowed),
``chaos.early`` acks when it starts (a run that dies with its process is gone by Celery's
contract: at most once).
"""

from __future__ import annotations

import json
import os
import time

from celeriac import Celeriac

BROKER_ENV = "CHAOS_BROKER"
OPTIONS_ENV = "CHAOS_OPTIONS"
QUEUE_ENV = "CHAOS_QUEUE"
RECORD_ENV = "CHAOS_RECORD"
STALL_ENV = "CHAOS_STALL"

LATE = "chaos.late"
EARLY = "chaos.early"


def record(phase: str, seq: int) -> None:
    line = f"{phase} {seq} {os.getpid()} {os.getppid()} {time.time():.3f}\n".encode()
    fd = os.open(os.environ[RECORD_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def build_app(broker: str, options: dict[str, object], queue: str) -> Celeriac:
    app = Celeriac(
        "chaos",
        broker=broker,
        backend=None,
        task_default_queue=queue,
        task_ignore_result=True,
        broker_transport_options=options,
        broker_connection_max_retries=100,
        worker_prefetch_multiplier=2,
    )
    stall = os.environ.get(STALL_ENV)
    if stall:
        app.conf.worker_fetch_stall_timeout = float(stall)

    # a prefork child killed mid-run: the message comes back (Celery's default acks it, with
    # the task failed by WorkerLostError)
    @app.task(name=LATE, acks_late=True, reject_on_worker_lost=True)
    def late(seq: int, ms: float) -> None:
        record("start", seq)
        time.sleep(ms / 1000)
        record("done", seq)

    @app.task(name=EARLY)
    def early(seq: int, ms: float) -> None:
        record("start", seq)
        time.sleep(ms / 1000)
        record("done", seq)

    return app


app = (
    build_app(
        os.environ[BROKER_ENV],
        json.loads(os.environ.get(OPTIONS_ENV, "{}")),
        os.environ.get(QUEUE_ENV, "celery"),
    )
    if BROKER_ENV in os.environ
    else None
)
