"""Tasks for the key-expiry test: every kind of bookkeeping a Redis fleet writes.

The worker builds its app from ``ITEST_EXPIRY_URL`` and ``ITEST_EXPIRY_PREFIX`` (broker and
results on one Redis database, under one key prefix of the test's own).
"""

from __future__ import annotations

import os
from typing import Any

from celeriac import Celeriac, Task

URL_ENV = "ITEST_EXPIRY_URL"
PREFIX_ENV = "ITEST_EXPIRY_PREFIX"


def build_app(url: str, prefix: str) -> Celeriac:
    app = Celeriac(
        "expiry_itest",
        broker=url,
        backend=url,
        broker_transport_options={"key_prefix": prefix},
        result_backend_transport_options={"key_prefix": prefix},
        result_expires=600,
        task_default_queue=f"{prefix}q",
    )

    @app.task(name="x.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="x.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="x.boom")
    def boom() -> None:
        raise ValueError("boom")

    @app.task(name="x.retry_once", bind=True)
    def retry_once(self: Task[Any, Any]) -> str:
        if self.request.retries == 0:
            raise self.retry(countdown=0, max_retries=1)
        return "again"

    return app


if URL_ENV in os.environ:
    app = build_app(os.environ[URL_ENV], os.environ[PREFIX_ENV])
