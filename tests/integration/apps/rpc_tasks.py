"""Tasks for the ``rpc://`` integration tests: a worker process and the test share this module.

The app is built from the environment: ``ITEST_RPC_BROKER`` (a broker URL), ``ITEST_RPC_PREFIX``
(a Redis key prefix, one per test), ``ITEST_RPC_QUEUE`` (the task queue, one per test) and
``ITEST_RPC_BACKEND`` (default: ``rpc://`` on the local RabbitMQ).
"""

from __future__ import annotations

import os
from typing import Any

from celeriac import Celeriac

BROKER_ENV = "ITEST_RPC_BROKER"
PREFIX_ENV = "ITEST_RPC_PREFIX"
QUEUE_ENV = "ITEST_RPC_QUEUE"
BACKEND_ENV = "ITEST_RPC_BACKEND"
RESULTS = "rpc://guest:guest@127.0.0.1:5672//"


class Boom(Exception):
    """The error ``boom`` raises: rebuilt with its own type by a caller that imports this."""


def build_app(broker: str, prefix: str, queue: str, backend: str = RESULTS) -> Celeriac:
    options: dict[str, Any] = {"key_prefix": prefix} if broker.startswith("redis") else {}
    app = Celeriac(
        "rpc_itest",
        broker=broker,
        backend=backend,
        broker_transport_options=options,
        task_default_queue=queue,
    )

    @app.task(name="rpc.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="rpc.boom")
    def boom(text: str) -> None:
        raise Boom(text)

    @app.task(name="rpc.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @app.task(name="rpc.flaky", bind=True, max_retries=3, default_retry_delay=0)
    def flaky(self: Any, value: int) -> int:
        if self.request.retries < 2:
            raise self.retry()
        return value

    return app


if BROKER_ENV in os.environ:
    app = build_app(
        os.environ[BROKER_ENV],
        os.environ[PREFIX_ENV],
        os.environ[QUEUE_ENV],
        os.environ.get(BACKEND_ENV, RESULTS),
    )
