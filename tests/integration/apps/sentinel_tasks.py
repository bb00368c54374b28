"""Tasks for the Sentinel tests: a worker process and the test share this module.

The app is built from the environment: ``ITEST_SENTINEL_URL`` (the broker's ``sentinel://``
list), ``ITEST_SENTINEL_RESULTS`` (the results', default the same), ``ITEST_SENTINEL_MASTER`` (the
master's name), ``ITEST_SENTINEL_PREFIX`` (a key prefix, one per test) and
``ITEST_SENTINEL_QUEUE`` (the task queue, one per test).
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import uuid
from typing import Any

from celeriac import Celeriac

URL_ENV = "ITEST_SENTINEL_URL"
RESULTS_ENV = "ITEST_SENTINEL_RESULTS"
MASTER_ENV = "ITEST_SENTINEL_MASTER"
PREFIX_ENV = "ITEST_SENTINEL_PREFIX"
QUEUE_ENV = "ITEST_SENTINEL_QUEUE"


def build_app(
    url: str, master: str, prefix: str, queue: str, results: str | None = None
) -> Celeriac:
    """Broker and results both through sentinels, in kombu's and Celery's URL spelling."""
    options: dict[str, Any] = {"master_name": master, "key_prefix": prefix}
    app = Celeriac(
        "sentinel_itest",
        broker=url,
        backend=results or url,
        broker_transport_options=options,
        result_backend_transport_options=options,
        task_default_queue=queue,
    )

    @app.task(name="sentinel.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="sentinel.shift")
    def shift(when: dt.datetime, price: decimal.Decimal, ref: uuid.UUID) -> list[Any]:
        """Typed arguments in, typed results out (kombu's JSON envelopes on the wire)."""
        return [when + dt.timedelta(days=1), price * 2, ref, type(ref).__name__]

    return app


if URL_ENV in os.environ:
    app = build_app(
        os.environ[URL_ENV],
        os.environ[MASTER_ENV],
        os.environ[PREFIX_ENV],
        os.environ[QUEUE_ENV],
        os.environ.get(RESULTS_ENV),
    )
