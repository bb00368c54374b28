"""The parity suite's real worker: ``python -m celeriac -A proj worker`` on Redis, and the
records its hooks and signal receivers report (see :mod:`proj.events`).

Each test module that needs a worker starts one for the module (``worker`` fixtures call
:func:`running_worker`) and stops it when the module ends; the Redis keys of the run's prefix
are deleted then. The worker is started with the integration harness
(``tests/integration/worker_harness.py``), which this directory reaches through ``sys.path``:
pytest puts only a test module's own directory there.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

PARITY_DIR = Path(__file__).resolve().parent
INTEGRATION_DIR = PARITY_DIR.parent / "integration"
if str(INTEGRATION_DIR) not in sys.path:
    sys.path.insert(0, str(INTEGRATION_DIR))

from proj import events  # noqa: E402
from proj.celery import app  # noqa: E402
from proj.celeryconfig import PREFIX, REDIS_URL  # noqa: E402
from worker_harness import WorkerProcess, child_env, start_cli_worker  # noqa: E402

from conftest import delete_redis_keys, require_service  # noqa: E402

__all__ = ["NODE", "QUEUES", "TIMEOUT", "Events", "WorkerProcess", "running_worker"]

#: Every queue the project's tasks are sent to in the suite ("Routing Tasks": ``-Q a,b``).
QUEUES = "celery,hipri,lopri,priority.high,feed_tasks,videos,images,media,broadcast_tasks"
#: The node name, as Celery's docs write it (``-n parity@%h``).
NODE = "parity@%h"
#: Long enough for a loaded CI machine; every wait ends as soon as its event comes.
TIMEOUT = 20.0


@contextmanager
def running_worker(
    cwd: Path, *extra: str, pool: str = "prefork", node: str = NODE, clean: bool = True
) -> Iterator[WorkerProcess]:
    """A worker for the project (Celery's default pool unless told), stopped on exit; the
    run's Redis keys are deleted after it unless ``clean`` is false (a second worker that
    leaves before the module's first)."""
    require_service("Redis", 6379)
    env = child_env(
        {
            "PYTHONPATH": os.pathsep.join([str(PARITY_DIR), os.environ.get("PYTHONPATH", "")]),
            "PARITY_PREFIX": PREFIX,
            "PARITY_REDIS_URL": REDIS_URL,
        }
    )
    worker = start_cli_worker(
        "proj", env, cwd, "-n", node, "-Q", QUEUES, *extra, pool=pool, concurrency=2
    )
    try:
        yield worker
    finally:
        worker.stop()
        if clean:
            app.close()
            delete_redis_keys(REDIS_URL, PREFIX)


class Events:
    """The records reported about each key, read as they come (``BLPOP``, no polling)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def wait(self, key: str, kind: str, timeout: float = TIMEOUT, **match: Any) -> dict[str, Any]:
        """The first record of ``kind`` about ``key`` (holding the items of ``match``), waiting
        for it if it has not come yet."""
        while (found := self._find(key, kind, match)) is None:
            self._pop(key, timeout, f"no {kind!r} record about {key}")
        return found

    def wait_many(
        self, key: str, kind: str, count: int, timeout: float = TIMEOUT
    ) -> list[dict[str, Any]]:
        """The first ``count`` records of ``kind`` about ``key``, waiting for them."""
        while len(found := [r for r in self.seen.get(key, []) if r["kind"] == kind]) < count:
            self._pop(key, timeout, f"{len(found)} of {count} {kind!r} records about {key}")
        return found[:count]

    def _pop(self, key: str, timeout: float, failure: str) -> None:
        """Wait for the next record about ``key``; fail with ``failure`` after ``timeout``."""
        popped = events.client().blpop([events.events_key(key)], timeout=timeout)
        if popped is None:
            raise AssertionError(f"{failure} within {timeout}s; seen: {self.seen.get(key, [])}")
        _, raw = cast("tuple[bytes, bytes]", popped)
        self.seen.setdefault(key, []).append(json.loads(raw))

    def kinds(self, key: str) -> list[str]:
        """The kinds recorded about ``key`` so far, in order (without waiting)."""
        client = events.client()
        while (raw := client.lpop(events.events_key(key))) is not None:
            self.seen.setdefault(key, []).append(json.loads(cast("bytes", raw)))
        return [record["kind"] for record in self.seen.get(key, [])]

    def _find(self, key: str, kind: str, match: dict[str, Any]) -> dict[str, Any] | None:
        for record in self.seen.get(key, []):
            if record["kind"] == kind and all(record.get(k) == v for k, v in match.items()):
                return record
        return None
