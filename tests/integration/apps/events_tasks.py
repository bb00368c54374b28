"""Tasks for the events integration tests: one of each way a task can end.

The worker imports this module (``-A apps.events_tasks``) and builds its app from the
environment: ``ITEST_EVENTS_BROKER`` (the broker URL), ``ITEST_EVENTS_OPTIONS`` (the transport
options as JSON: a Redis key prefix of the test's own) and ``ITEST_EVENTS_QUEUE`` (the default
queue, one per test on a shared broker). No result backend: the tests learn everything from the
events themselves.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celeriac import Celeriac, Task
from celeriac.errors import Reject

BROKER_ENV = "ITEST_EVENTS_BROKER"
OPTIONS_ENV = "ITEST_EVENTS_OPTIONS"
QUEUE_ENV = "ITEST_EVENTS_QUEUE"


def build_app(
    broker: str, options: dict[str, Any] | None = None, queue: str = "celery"
) -> Celeriac:
    app = Celeriac(
        "events_itest",
        broker=broker,
        backend=None,
        task_default_queue=queue,
        broker_transport_options=options or {},
    )

    @app.task(name="ev.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="ev.boom")
    def boom() -> None:
        raise ValueError("bad", 42)

    @app.task(name="ev.retry_once", bind=True)
    def retry_once(self: Task[Any, Any]) -> str:
        if self.request.retries == 0:
            self.retry(countdown=0, max_retries=1)
        return "again"

    @app.task(name="ev.refuse", acks_late=True)
    def refuse() -> None:
        raise Reject("not for me", requeue=False)

    @app.task(name="ev.sleep")
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    return app


if BROKER_ENV in os.environ:
    app = build_app(
        os.environ[BROKER_ENV],
        json.loads(os.environ.get(OPTIONS_ENV) or "{}"),
        os.environ.get(QUEUE_ENV) or "celery",
    )
