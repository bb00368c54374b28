"""The canvas tasks as a worker module (``-A apps.canvas_worker``) for prefork workers.

The app is built from the environment: ``CANVAS_URL`` (broker and results: a Redis or SQLite URL)
and ``CANVAS_PREFIX`` (a Redis key prefix of the test's own; ignored for SQLite).
"""

from __future__ import annotations

import os
import time
from typing import Any

from apps.canvas_tasks import Tasks, declare
from celeriac import Celeriac

URL_ENV = "CANVAS_URL"
PREFIX_ENV = "CANVAS_PREFIX"


def build_app(url: str, prefix: str) -> tuple[Celeriac, Tasks]:
    options: dict[str, Any] = {}
    if url.startswith("redis"):
        options = {
            "broker_transport_options": {"key_prefix": prefix, "lease_seconds": 2.0},
            "result_backend_transport_options": {"key_prefix": prefix},
        }
    app = Celeriac("canvas_prefork", broker=url, backend=url, **options)
    tasks = declare(app)
    backend = app.backend
    assert backend is not None

    @app.task(name="canvas.slow_add", acks_late=True)
    def slow_add(x: int, y: int, tag: str) -> int:
        time.sleep(0.01)  # long enough for a kill -9 to land while members run
        backend.incr(f"runs:{tag}")
        return x + y

    return app, tasks


if URL_ENV in os.environ:
    app, tasks = build_app(os.environ[URL_ENV], os.environ.get(PREFIX_ENV, ""))
