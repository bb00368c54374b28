"""The tasks behind the dashboard's browser suite, on any broker.

The worker and the dashboard import this module (``-A dashboard_tasks``) and build their app
from the environment: ``ITEST_DASH_BROKER`` (broker URL, also the result backend on Redis),
``ITEST_DASH_OPTIONS`` (transport options as JSON: a Redis key prefix of the test's own) and
``ITEST_DASH_QUEUE`` (the default queue, one per test module on a shared broker). The test
process builds the same app with :func:`build_app`, so names and routes agree on every side.

Two tasks fail until a *gate* file exists, so that a test can make a task fail, open the gate,
then retry or requeue it from the page and see it succeed: ``d.flaky`` raises (a FAILURE to
retry), ``d.gated`` rejects its message (a dead letter to requeue).
"""

from __future__ import annotations

import json
import os
from typing import Any

from celeriac import Celeriac
from celeriac.errors import Reject

BROKER_ENV = "ITEST_DASH_BROKER"
OPTIONS_ENV = "ITEST_DASH_OPTIONS"
QUEUE_ENV = "ITEST_DASH_QUEUE"


class GateClosed(RuntimeError):
    """The gate file a task waits for is not there yet."""


def build_app(
    broker: str, options: dict[str, Any] | None = None, queue: str = "celery"
) -> Celeriac:
    options = options or {}
    on_redis = broker.startswith("redis")
    app = Celeriac(
        "dashboard_itest",
        broker=broker,
        backend=broker if on_redis else None,
        task_default_queue=queue,
        broker_transport_options=options,
        result_backend_transport_options={"key_prefix": options["key_prefix"]} if on_redis else {},
    )

    @app.task(name="d.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="d.fail")
    def fail(x: int) -> None:
        raise ValueError(f"bad value {x}")

    @app.task(name="d.flaky")
    def flaky(gate: str) -> str:
        if not os.path.exists(gate):
            raise GateClosed(f"gate {os.path.basename(gate)} is closed")
        return "passed"

    @app.task(name="d.gated", acks_late=True)
    def gated(gate: str) -> str:
        if not os.path.exists(gate):
            raise Reject(f"gate {os.path.basename(gate)} is closed", requeue=False)
        return "through"

    return app


if BROKER_ENV in os.environ:
    app = build_app(
        os.environ[BROKER_ENV],
        json.loads(os.environ.get(OPTIONS_ENV) or "{}"),
        os.environ.get(QUEUE_ENV) or "celery",
    )
