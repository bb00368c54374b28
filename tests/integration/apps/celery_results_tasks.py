"""Both sides of the Celery results interop tests: a celeriac app, and the source of a Celery one,
with the same tasks, on RabbitMQ for tasks and Redis in Celery's layout for results.

The celeriac app is built from the environment when a worker imports this module:
``ITEST_CR_QUEUE`` (the queue it consumes, one per test) and ``ITEST_CR_PREFIX`` (the Redis key
prefix, one per test). :data:`CELERY_APP` is a Celery 5.7 module with the same tasks, written
into the test's directory and run by ``celery -A``.
"""

from __future__ import annotations

import os
from typing import Any

from celeriac import Celeriac

QUEUE_ENV = "ITEST_CR_QUEUE"
PREFIX_ENV = "ITEST_CR_PREFIX"
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
RESULTS = "redis://127.0.0.1:6379/10"


def build_app(queue: str, prefix: str) -> Celeriac:
    app = Celeriac(
        "celery_results_itest",
        broker=BROKER,
        backend=RESULTS,
        # declared as Celery declares it, so either side may declare it first
        broker_transport_options={"max_priority": 0},
        result_backend_transport_options={"layout": "celery", "global_keyprefix": prefix},
        result_extended=True,
        task_default_queue=queue,
    )

    @app.task(name="interop.add")
    def add(x: int, y: int) -> dict[str, Any]:
        return {"sum": x + y, "by": "celeriac"}

    @app.task(name="interop.tsum")
    def tsum(parts: list[dict[str, Any]]) -> dict[str, Any]:
        """The header's parts in the order the body got them, and where each ran."""
        return {
            "sums": [p["sum"] for p in parts],
            "from": [p["by"] for p in parts],
            "by": "celeriac",
        }

    @app.task(name="interop.boom")
    def boom(text: str) -> None:
        raise ValueError(text, 42)

    return app


#: The Celery side: format with broker, results, queue and prefix.
CELERY_APP = """
from celery import Celery

app = Celery("celery_side", broker={broker!r}, backend={results!r})
app.conf.task_default_queue = {queue!r}
app.conf.result_backend_transport_options = {{"global_keyprefix": {prefix!r}}}
app.conf.result_extended = True


@app.task(name="interop.add")
def add(x, y):
    return {{"sum": x + y, "by": "celery"}}


@app.task(name="interop.tsum")
def tsum(parts):
    return {{"sums": [p["sum"] for p in parts], "from": [p["by"] for p in parts], "by": "celery"}}


@app.task(name="interop.boom")
def boom(text):
    raise ValueError(text, 42)
"""


if QUEUE_ENV in os.environ:
    app = build_app(os.environ[QUEUE_ENV], os.environ[PREFIX_ENV])
