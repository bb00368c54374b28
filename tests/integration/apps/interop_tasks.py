"""A celeriac worker that a Celery 5.7 client sends tasks to, over RabbitMQ with ``rpc://``.

Built from the environment: ``ITEST_INTEROP_QUEUE`` (the task queue, one per test). The queue is
declared without priorities (``max_priority: 0``), as Celery declares it, so that either side
may declare it first.
"""

from __future__ import annotations

import os
from typing import Any

from celeriac import Celeriac

QUEUE_ENV = "ITEST_INTEROP_QUEUE"
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"


def build_app(queue: str) -> Celeriac:
    app = Celeriac(
        "interop_itest",
        broker=BROKER,
        backend="rpc://",
        broker_transport_options={"max_priority": 0},
        task_default_queue=queue,
    )

    @app.task(name="interop.describe")
    def describe(*args: Any, **kwargs: Any) -> dict[str, Any]:
        """What arrived, with each value's type: the caller checks both, then gets the values
        themselves back as the result (typed again on its side)."""
        values = [*args, *kwargs.values()]
        return {"types": [type(v).__name__ for v in values], "values": values}

    return app


if QUEUE_ENV in os.environ:
    app = build_app(os.environ[QUEUE_ENV])
