"""A fetched-but-waiting message keeps its lease while another worker idles (Redis, SQLite).

The promise (docs/guide/brokers.md; the consumer's docstring): every delivery a worker holds
unacked has its lease renewed while the worker holds it, not only a running ``acks_late`` task's
(tests/integration/test_worker_sqlite.py holds that one). A worker with one busy slot and a
prefetch window of four holds three messages that wait for the slot; a second worker, idle on the
same queue, must not get them when their first lease (0.6 s here) runs out: they stay with the
first worker, and each is delivered once.

RabbitMQ has no leases (a delivery is held for its connection), so it is not here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.promise_brokers import Namespace
from worker_harness import queue_size, wait_until

from celeriac import Celeriac
from celeriac.testing import worker_thread

LEASE = 0.6
WAIT = 15.0
WAITING = 3


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def namespace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Namespace]:
    made = Namespace(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


class Runs:
    """Which worker ran what, with the delivery count it saw; a blocker held by an event."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.release = threading.Event()

    def declare(self, app: Celeriac) -> None:
        @app.task(name="pr.hold", bind=True)
        def hold(task: Any) -> str:
            self.record(task, "hold")
            self.started.set()
            if not self.release.wait(WAIT * 2):
                raise TimeoutError("never released")
            return "held"

        @app.task(name="pr.tag", bind=True)
        def tag(task: Any, label: str) -> str:
            self.record(task, label)
            return label

    def record(self, task: Any, label: str) -> None:
        with self.lock:
            self.seen.append((label, task.request.hostname, task.request.delivery_count))

    def snapshot(self) -> list[tuple[str, str, int]]:
        with self.lock:
            return list(self.seen)


def test_messages_waiting_for_a_slot_keep_their_lease_while_another_worker_idles(
    namespace: Namespace,
) -> None:
    runs = Runs()
    options = {"broker_transport_options": {"lease_seconds": LEASE}}
    busy_app, idle_app = namespace.app("busy", **options), namespace.app("idle", **options)
    for app in (busy_app, idle_app):
        runs.declare(app)
    hold = busy_app.send_task("pr.hold")
    tags = [busy_app.send_task("pr.tag", (f"t{i}",)) for i in range(WAITING)]
    # sent first: the busy worker takes all four at once, runs one, holds three for its slot
    with worker_thread(busy_app, concurrency=1, prefetch_multiplier=4, hostname="busy@promise"):
        assert runs.started.wait(WAIT)
        wait_until(lambda: queue_size(busy_app, namespace.queue) == 0, WAIT, "all four leased")
        with worker_thread(idle_app, concurrency=1, hostname="idle@promise"):
            began = time.monotonic()
            # not a synchronisation: the first lease of each message must run out three times
            # over while they wait, and the idle worker must get none of them
            while time.monotonic() < began + 3 * LEASE:
                assert queue_size(busy_app, namespace.queue) == 0  # never waiting for anyone
                assert [label for label, *_ in runs.snapshot()] == ["hold"]
                time.sleep(0.1)
            runs.release.set()
            assert hold.get(timeout=WAIT) == "held"
            assert [t.get(timeout=WAIT) for t in tags] == [f"t{i}" for i in range(WAITING)]
    seen = runs.snapshot()
    assert sorted(seen) == sorted(
        [("hold", "busy@promise", 1)] + [(f"t{i}", "busy@promise", 1) for i in range(WAITING)]
    ), seen  # all by the busy worker, each delivered once
