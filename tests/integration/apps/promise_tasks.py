"""Tasks for the tests of the documentation's promises (``tests/integration/test_promise_*.py``).

Both sides build the app with :func:`build_app`: the test process with its own arguments, the
worker process (``-A apps.promise_tasks``) at import time from the environment, so that task
names and settings are the same on both sides.

Environment (read only by the worker process): ``ITEST_PROMISE_BROKER`` (broker URL; results go
to the same URL unless ``ITEST_PROMISE_BACKEND`` names another), ``ITEST_PROMISE_PREFIX`` (the
Redis key prefix of the test, for broker and results), ``ITEST_PROMISE_SETTINGS`` (JSON: more
settings, e.g. ``task_time_limit`` or ``worker_autoscaler``).

Every task that waits does so on a file appearing, polling every 10 ms and bounded, so that no
test can hang a worker; each run leaves a marker file named by the test (its pid inside), so the
test sees a task start without asking the broker.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from celeriac import Celeriac, SoftTimeLimitExceeded
from celeriac.worker.autoscale import Autoscaler

BROKER_ENV = "ITEST_PROMISE_BROKER"
BACKEND_ENV = "ITEST_PROMISE_BACKEND"
PREFIX_ENV = "ITEST_PROMISE_PREFIX"
SETTINGS_ENV = "ITEST_PROMISE_SETTINGS"
WAIT_LIMIT = 30.0
#: How long a runaway task runs at most when nothing stops it (the threads pool cannot).
RUNAWAY_LIMIT = 6.0


class QuickAutoscaler(Autoscaler):
    """The default policy with a short keepalive: shrinking is seen in a second, not 30."""

    interval = 0.25
    keepalive = 1.0


def mark(marks: str, tag: str) -> None:
    """Say that a run started: ``marks/tag`` holds the pid of the process running it."""
    Path(marks, tag).write_text(str(os.getpid()), encoding="utf-8")


def wait_for_file(path: str, limit: float = WAIT_LIMIT) -> bool:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def build_app(
    broker: str,
    backend: str | None = None,
    prefix: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Celeriac:
    """An app on ``broker`` (results on ``backend``, else on the broker's URL), its Redis keys
    under ``prefix`` when given, with every task of these tests."""
    options: dict[str, Any] = dict(settings or {})
    if prefix is not None:
        transport = {"key_prefix": prefix, **options.pop("broker_transport_options", {})}
        options["broker_transport_options"] = transport
        options["result_backend_transport_options"] = {"key_prefix": prefix}
    app = Celeriac("promise_tasks", broker=broker, backend=backend or broker, **options)

    @app.task(name="pr.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="pr.whoami", bind=True)
    def whoami(self: Any) -> str:
        return str(self.request.hostname)

    @app.task(name="pr.total")
    def total(values: list[int]) -> int:
        return sum(values)

    @app.task(name="pr.retry_once", bind=True, max_retries=1)
    def retry_once(self: Any) -> str:
        if self.request.retries == 0:
            self.retry(countdown=0.1)
        return "again"

    @app.task(name="pr.block", bind=True)
    def block(self: Any, marks: str, tag: str, release: str) -> dict[str, Any]:
        """Mark the run, wait for ``release``; acked when it starts (the default)."""
        mark(marks, tag)
        if not wait_for_file(release):
            raise TimeoutError(f"{release} never appeared")
        return {"pid": os.getpid(), "delivery_count": self.request.delivery_count}

    @app.task(name="pr.late_block", bind=True, acks_late=True)
    def late_block(self: Any, marks: str, tag: str, release: str) -> dict[str, Any]:
        """As ``pr.block``, acked only when it ends: a cold shutdown gives it back."""
        mark(marks, tag)
        if not wait_for_file(release):
            raise TimeoutError(f"{release} never appeared")
        return {"pid": os.getpid(), "delivery_count": self.request.delivery_count}

    @app.task(name="pr.stubborn")
    def stubborn(marks: str, tag: str) -> str:
        """Catches the soft limit (and says so), then runs on until the hard limit."""
        try:
            deadline = time.monotonic() + RUNAWAY_LIMIT
            while time.monotonic() < deadline:
                time.sleep(0.01)
        except SoftTimeLimitExceeded:
            mark(marks, tag)
            deadline = time.monotonic() + RUNAWAY_LIMIT
            while time.monotonic() < deadline:
                time.sleep(0.01)
            return "ran past the hard limit"
        return "never stopped"

    @app.task(name="pr.own_limit", time_limit=30, soft_time_limit=29)
    def own_limit(seconds: float) -> str:
        """A task whose own limits are longer than the worker's defaults."""
        time.sleep(seconds)
        return "ok"

    return app


def _from_environment() -> Celeriac | None:
    broker = os.environ.get(BROKER_ENV)
    if broker is None:
        return None
    settings = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
    return build_app(
        broker, os.environ.get(BACKEND_ENV) or None, os.environ.get(PREFIX_ENV) or None, settings
    )


#: The worker's app (``-A apps.promise_tasks``); ``None`` when imported by the tests themselves.
app: Celeriac | None = _from_environment()
