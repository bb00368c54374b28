"""The capacity run's app: one no-op task, results ignored, so that what is measured is the
broker's part of a task and the worker's around it, nothing else.

Imported by the run's workers (``celeriac -A capacity_parts.app worker``) and producers with
``CAPACITY_BROKER`` (a Redis or RabbitMQ URL), ``CAPACITY_PREFIX`` (the run's Redis key prefix)
and ``CAPACITY_QUEUE`` (the run's queue) set by ``bench/capacity.py``.
"""

from __future__ import annotations

import os

from celeriac import Celeriac

BROKER = os.environ.get("CAPACITY_BROKER", "redis://127.0.0.1:6379/12")
PREFIX = os.environ.get("CAPACITY_PREFIX", "capacity:")
QUEUE = os.environ.get("CAPACITY_QUEUE", "capacity")


def make_app(broker: str, prefix: str, queue: str) -> Celeriac:
    """The app for one broker, key prefix and queue (the driver makes one per step too)."""
    return Celeriac(
        "capacity",
        broker=broker,
        backend="disabled",
        task_default_queue=queue,
        broker_transport_options={"key_prefix": prefix} if broker.startswith("redis") else {},
    )


app = make_app(BROKER, PREFIX, QUEUE)


@app.task(name="capacity.noop", ignore_result=True)
def noop() -> None:
    """Nothing: the task's own cost is zero, so every microsecond measured is the queue's."""
