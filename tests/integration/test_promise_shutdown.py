"""Warm and cold shutdown of a Redis worker in each pool, by SIGTERM and by SIGINT.

The promise (docs/guide/workers.md, "Shutdown"): the first SIGTERM or SIGINT is warm (stop
fetching, give back the messages fetched but not started at once, let the running task finish,
exit 0); a second signal is cold (give back every unacked message, the running ``acks_late``
task's included, and leave at once). tests/integration/test_worker_shutdown.py holds it on
SQLite (threads and prefork, SIGTERM and SIGQUIT); here it is Redis, all four pools and both
signals.

Each test starts two workers of one pool at once, each on a key prefix of its own: one is
stopped warm by one signal, the other is sent the other signal (warm), then the first one (cold);
the signals swap from pool to pool, so each signal is both a warm and a cold trigger. What the
workers gave back is then run by a worker in this process: nothing was lost or run twice.
"""

from __future__ import annotations

import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps.promise_tasks import BROKER_ENV, PREFIX_ENV, build_app
from worker_harness import WorkerProcess, child_env, queue_size, wait_until

from celeriac import Celeriac, states
from celeriac.testing import worker_thread
from conftest import delete_redis_keys, require_service

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/0"
WAIT = 15.0
#: pool -> (the signal that stops one worker warm and, sent second, the other cold; the
#: signal that starts the other worker's warm shutdown)
SIGNALS = {
    "prefork": (signal.SIGTERM, signal.SIGINT),
    "threads": (signal.SIGINT, signal.SIGTERM),
    "solo": (signal.SIGTERM, signal.SIGINT),
    "asyncio": (signal.SIGINT, signal.SIGTERM),
}
HELD = 3  # messages fetched by the worker but not started: one slot, a window of four


class Node:
    """One worker's key prefix, its test-side app, its marks and its release file."""

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.marks = self.dir / "marks"
        self.marks.mkdir(parents=True)
        self.release = self.dir / "release"
        self.prefix = f"promise-sd-{uuid.uuid4().hex[:8]}:"
        self.app: Celeriac = build_app(URL, prefix=self.prefix)
        self.worker: WorkerProcess | None = None

    def start(self, pool: str) -> WorkerProcess:
        args = [sys.executable, "-m", "celeriac", "-A", "apps.promise_tasks", "worker"]
        args += ["-P", pool, "-c", "1", "--prefetch-multiplier", "4", "-l", "info"]
        args += ["-n", f"{self.dir.name}@promise"]
        env = child_env({BROKER_ENV: URL, PREFIX_ENV: self.prefix})
        self.worker = WorkerProcess(args, env, self.dir)
        return self.worker

    def size(self) -> int:
        return queue_size(self.app)

    def close(self) -> None:
        try:
            self.release.touch()
            if self.worker is not None:
                self.worker.stop()
        finally:
            self.app.close()
            delete_redis_keys(URL, self.prefix)


def sized(node: Node, count: int) -> Callable[[], bool]:
    return lambda: node.size() == count


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    require_service("Redis", 6379)
    warm, cold = Node(tmp_path, "warm"), Node(tmp_path, "cold")
    try:
        yield warm, cold
    finally:
        for node in (warm, cold):
            node.close()


@pytest.mark.parametrize("pool", list(SIGNALS))
def test_warm_then_cold_shutdown_of_a_redis_worker(nodes: tuple[Node, Node], pool: str) -> None:
    warm, cold = nodes
    first, second = SIGNALS[pool]
    blockers = {
        warm: warm.app.send_task("pr.block", (str(warm.marks), "blocker", str(warm.release))),
        cold: cold.app.send_task("pr.late_block", (str(cold.marks), "blocker", str(cold.release))),
    }
    adds = {node: [node.app.send_task("pr.add", (i, 100)) for i in range(HELD)] for node in nodes}
    # sent before the workers start: each fetches all four at once, runs one, holds three; a
    # prefork child fetches for itself, one message at a time: the three wait on the broker
    held = 0 if pool == "prefork" else HELD
    workers = {node: node.start(pool) for node in nodes}
    for node, worker in workers.items():
        worker.wait_ready()
        wait_until((node.marks / "blocker").exists, WAIT, f"{node.dir.name}'s task to start")
        assert node.size() == HELD - held  # leased by the worker

    workers[warm].send(first)
    workers[cold].send(second)
    for node in nodes:  # the three waiting messages are back while the task still runs
        wait_until(sized(node, HELD), WAIT, f"{node.dir.name}'s requeue")
        assert workers[node].running, workers[node].output()
        assert blockers[node].state == states.PENDING

    workers[cold].send(first)  # cold: the running acks_late task's message goes back too
    assert workers[cold].wait_exit(5) in (0, 1), workers[cold].output()
    assert not cold.release.exists()
    assert cold.size() == HELD + 1
    assert blockers[cold].state == states.PENDING
    assert "stopped (cold)" in workers[cold].stderr(), workers[cold].output()

    warm.release.touch()  # warm: the running task ends, is stored, the process exits 0
    assert workers[warm].wait_exit(WAIT) == 0, workers[warm].output()
    assert blockers[warm].get(timeout=WAIT)["delivery_count"] == 1
    assert warm.size() == HELD
    assert "stopped (warm)" in workers[warm].stderr(), workers[warm].output()
    for worker in workers.values():
        assert "Traceback" not in worker.stderr(), worker.output()

    # what came back runs, once: the cold worker's task a second time (acks_late allows it)
    cold.release.touch()
    for node in nodes:
        with worker_thread(node.app, concurrency=2):
            assert [r.get(timeout=WAIT) for r in adds[node]] == [100 + i for i in range(HELD)]
            if node is cold:
                assert blockers[cold].get(timeout=WAIT)["delivery_count"] == 2
        assert node.size() == 0
    assert blockers[warm].state == states.SUCCESS
