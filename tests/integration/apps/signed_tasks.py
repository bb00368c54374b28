"""Tasks for the signed-messages tests: a worker that verifies, on any broker.

The worker builds its app from the environment: ``ITEST_SIGNED_BROKER`` (URL),
``ITEST_SIGNED_OPTIONS`` (transport options as JSON), ``ITEST_SIGNED_QUEUE`` (the test's own
default queue) and ``ITEST_SIGNED_RESULTS`` (a SQLite results file, shared with the test); its
keys come the way an operator gives them, as ``CELERIAC_SECURITY_KEY`` and
``CELERIAC_SECURITY_CERT_STORE``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celeriac import Celeriac, Task

BROKER_ENV = "ITEST_SIGNED_BROKER"
OPTIONS_ENV = "ITEST_SIGNED_OPTIONS"
QUEUE_ENV = "ITEST_SIGNED_QUEUE"
RESULTS_ENV = "ITEST_SIGNED_RESULTS"


def build_app(
    broker: str,
    options: dict[str, Any],
    queue: str,
    results: str,
    **settings: Any,
) -> Celeriac:
    app = Celeriac(
        "signed_itest",
        broker=broker,
        backend=f"sqlite:///{results}",
        task_default_queue=queue,
        broker_transport_options=options,
        **settings,
    )

    @app.task(name="signed.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="signed.retry_once", bind=True)
    def retry_once(self: Task[Any, Any]) -> str:
        if self.request.retries == 0:
            raise self.retry(countdown=0, max_retries=1)
        return "again"

    return app


if BROKER_ENV in os.environ:
    app = build_app(
        os.environ[BROKER_ENV],
        json.loads(os.environ.get(OPTIONS_ENV) or "{}"),
        os.environ[QUEUE_ENV],
        os.environ[RESULTS_ENV],
    )
