"""Tasks for the remote-control integration tests, on any broker (SQLite, Redis, RabbitMQ).

The worker imports this module (``-A apps.control_tasks``) and builds its app from the
environment: ``ITEST_CONTROL_BROKER`` (broker URL), ``ITEST_CONTROL_BACKEND`` (a SQLite file
URL for results, whatever the broker), ``ITEST_CONTROL_PREFIX`` (one per test: the Redis key
prefix, the default queue and the control namespace, ``control_exchange``, so that tests
running at once on one broker never hear each other's workers).

``c.spin`` is a long task that keeps a CPU busy until a release file appears (checked every few
thousand iterations, bounded to 30 s): the load a mailbox must answer ``ping`` through. ``c.nap``
is its ``async def`` twin for the asyncio pool, which awaits instead of spinning (an async task
that never awaits blocks its worker's loop: the pool's documented rule).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from celeriac import Celeriac

BROKER_ENV = "ITEST_CONTROL_BROKER"
BACKEND_ENV = "ITEST_CONTROL_BACKEND"
PREFIX_ENV = "ITEST_CONTROL_PREFIX"
LIMIT = 30.0


def mark(directory: str, task_id: str) -> None:
    """Say that a task started: a file named by its id, holding the pid that runs it."""
    Path(directory, task_id).write_text(str(os.getpid()))


def build_app(broker: str, backend: str, prefix: str) -> Celeriac:
    options: dict[str, object] = {"poll_interval": 0.01} if broker.startswith("sqlite") else {}
    if broker.startswith("redis"):
        options["key_prefix"] = prefix
    if broker.startswith("amqp"):
        options["revokes_stream"] = f"{prefix}.revokes"
    app = Celeriac(
        "control_itest",
        broker=broker,
        backend=backend,
        broker_transport_options=options,
        result_backend_transport_options={"poll_interval": 0.01},
        control_exchange=prefix,
        task_default_queue=prefix,
        broker_connection_max_retries=10,
    )

    @app.task(name="c.spin", bind=True)
    def spin(self: object, started_dir: str, release: str) -> int:
        mark(started_dir, self.request.id)  # type: ignore[attr-defined]
        deadline = time.monotonic() + LIMIT
        rounds = 0
        while not os.path.exists(release) and time.monotonic() < deadline:
            for _ in range(20_000):  # pure Python work: holds the GIL as a CPU-bound task does
                rounds += 1
        return rounds

    @app.task(name="c.nap", bind=True)
    async def nap(self: object, started_dir: str, release: str) -> int:
        mark(started_dir, self.request.id)  # type: ignore[attr-defined]
        deadline = time.monotonic() + LIMIT
        naps = 0
        while not os.path.exists(release) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            naps += 1
        return naps

    @app.task(name="c.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="c.record", bind=True)
    def record(self: object, path: str) -> str:
        request = self.request  # type: ignore[attr-defined]
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{request.id}\n")
        return str(request.id)

    return app


if BROKER_ENV in os.environ:
    app = build_app(os.environ[BROKER_ENV], os.environ[BACKEND_ENV], os.environ[PREFIX_ENV])
