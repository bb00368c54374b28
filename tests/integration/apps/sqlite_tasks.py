"""The tasks the worker integration tests run, on a SQLite broker and backend in a test's tmp dir.

Both sides build the app with :func:`build_app`: the test process with its own tmp path, the worker
process (``-A apps.sqlite_tasks``) at import time from the environment variables below, so that
task names, serializers and transport options are the same on both sides. Every task that waits
does so on a file appearing, polling every 10 ms and bounded, so that no test can hang a worker.

Environment (read only by the worker process): ``ITEST_CELERIAC_DB`` (absolute path of the SQLite
file), ``ITEST_CELERIAC_LEASE`` (lease seconds, default 60).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from celeriac import Celeriac

DB_ENV = "ITEST_CELERIAC_DB"
LEASE_ENV = "ITEST_CELERIAC_LEASE"
WAIT_LIMIT = 30.0  # the longest a task waits for a release file before giving up


class ReleaseTimeout(Exception):
    """A waiting task was never released (the test went wrong): fail rather than hang."""


def wait_for_file(path: str, limit: float = WAIT_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise ReleaseTimeout(f"{path} did not appear within {limit}s")
        time.sleep(0.01)


def touch_unique(directory: str, prefix: str) -> str:
    """Create a new, uniquely named file in ``directory``: one file per run of a task."""
    path = os.path.join(directory, f"{prefix}-{uuid.uuid4().hex}")
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(str(os.getpid()))
    return path


def append_line(path: str, line: str) -> None:
    """Append one line with a single O_APPEND write: atomic between processes for short lines."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def build_app(db: str | os.PathLike[str], lease_seconds: float = 60.0) -> Celeriac:
    """An app on ``db`` (absolute path) for broker and results, with every test task."""
    url = f"sqlite:///{Path(db).resolve()}"
    app = Celeriac(
        "sqlite_tasks",
        broker=url,
        backend=url,
        broker_transport_options={"lease_seconds": lease_seconds, "poll_interval": 0.01},
    )

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="t.async_square")
    async def async_square(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * x

    @app.task(name="t.stamp", bind=True)
    def stamp(self: Any, x: int) -> dict[str, Any]:
        """When it ran, and how many times its message had been delivered."""
        return {"x": x, "ran_at": time.time(), "delivery_count": self.request.delivery_count}

    @app.task(name="t.retry_twice", bind=True, max_retries=5)
    def retry_twice(self: Any, runs_file: str) -> int:
        append_line(runs_file, f"retries={self.request.retries}")
        if self.request.retries < 2:
            self.retry(countdown=0.1)
        return int(self.request.retries)

    @app.task(name="t.retry_later", bind=True, max_retries=1)
    def retry_later(self: Any, runs_file: str, countdown: float) -> None:
        append_line(runs_file, f"retries={self.request.retries}")
        self.retry(countdown=countdown)

    @app.task(
        name="t.always_fails",
        bind=True,
        autoretry_for=(ConnectionError,),
        retry_backoff=0.05,
        max_retries=2,
    )
    def always_fails(self: Any, runs_file: str) -> None:
        append_line(runs_file, f"retries={self.request.retries}")
        raise ConnectionError(f"down (attempt {self.request.retries + 1})")

    @app.task(name="t.fail_value")
    def fail_value(x: int) -> None:
        raise ValueError(f"bad value {x}")

    @app.task(name="t.touch")
    def touch(path: str) -> str:
        Path(path).touch()
        return path

    @app.task(name="t.block", bind=True)
    def block(self: Any, runs_dir: str, release: str) -> dict[str, Any]:
        """Mark a run, then wait for ``release``; acked early (the default)."""
        touch_unique(runs_dir, "run")
        wait_for_file(release)
        return {"delivery_count": self.request.delivery_count}

    @app.task(name="t.late_block", bind=True, acks_late=True)
    def late_block(self: Any, runs_dir: str, release: str) -> dict[str, Any]:
        """Like ``t.block`` but acked only when done: a lost worker's run is run again."""
        touch_unique(runs_dir, f"run-{self.request.id}")
        wait_for_file(release)
        return {"delivery_count": self.request.delivery_count}

    @app.task(name="t.record", bind=True)
    def record(self: Any, path: str) -> None:
        append_line(path, f"{self.request.id} {self.request.hostname}")

    return app


_db = os.environ.get(DB_ENV)
#: The worker's app (``-A apps.sqlite_tasks``); ``None`` when imported by the tests themselves.
app: Celeriac | None = (
    build_app(_db, float(os.environ.get(LEASE_ENV, "60"))) if _db is not None else None
)
