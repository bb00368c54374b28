"""Tasks for the worker-on-Redis integration tests.

The worker imports this module (``-A apps.redis_tasks``) and builds its app from the environment:
``ITEST_REDIS_URL`` (broker and results), ``ITEST_REDIS_PREFIX`` (key prefix, one per test),
``ITEST_REDIS_LEASE`` (lease seconds). Each run of ``record`` appends its argument as one line to
``ITEST_RUNS_FILE``: the test counts runs from a file, so counting does not depend on the Redis
that the test restarts.
"""

from __future__ import annotations

import os
import time

from celeriac import Celeriac

URL_ENV = "ITEST_REDIS_URL"
PREFIX_ENV = "ITEST_REDIS_PREFIX"
LEASE_ENV = "ITEST_REDIS_LEASE"
RUNS_ENV = "ITEST_RUNS_FILE"


def build_app(url: str, prefix: str, lease_seconds: float, runs_file: str) -> Celeriac:
    options = {"key_prefix": prefix, "lease_seconds": lease_seconds}
    app = Celeriac(
        "redis_itest",
        broker=url,
        backend=url,
        broker_transport_options=options,
        result_backend_transport_options={"key_prefix": prefix},
        broker_connection_max_retries=10,
    )

    @app.task(name="r.record", acks_late=True)
    def record(tag: str, pause: float = 0.0) -> str:
        if pause:
            time.sleep(pause)  # the task's own work, so that a run lasts long enough to interrupt
        fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{tag}\n".encode())
        finally:
            os.close(fd)
        return tag

    return app


if URL_ENV in os.environ:
    app = build_app(
        os.environ[URL_ENV],
        os.environ[PREFIX_ENV],
        float(os.environ.get(LEASE_ENV, "60")),
        os.environ[RUNS_ENV],
    )
