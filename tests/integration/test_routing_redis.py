"""Routing written for Celery, with real workers on Redis: a Broadcast queue and a kombu queue
with ``queue_arguments`` (see :mod:`apps.routing_tasks` for the settings)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_for_runs

from celeriac import Celeriac
from conftest import delete_redis_keys, require_service

pytest.importorskip("kombu")  # the settings under test are written with kombu's objects
from apps.routing_tasks import (
    BROADCAST,
    KOMBU_ENV,
    PREFIX_ENV,
    RUNS_ENV,
    URL_ENV,
    build_app,
)

URL = "redis://127.0.0.1:6379/14"
pytestmark = pytest.mark.redis


Run = tuple[int, str, str]  # (worker pid, task kind, tag)


def parse(lines: list[str]) -> list[Run]:
    runs = []
    for line in lines:
        pid, kind, tag = line.split(":")
        runs.append((int(pid), kind, tag))
    return runs


class Setup:
    def __init__(self, tmp_path: Path, mode: str) -> None:
        self.prefix = f"itest-rt-{uuid.uuid4().hex[:8]}:"
        self.runs = tmp_path / "runs.txt"
        self.dir = tmp_path
        self.mode = mode
        self.workers: list[WorkerProcess] = []
        self._app: Celeriac | None = None

    @property
    def app(self) -> Celeriac:
        if self._app is None:
            self._app = build_app(URL, self.prefix, str(self.runs), self.mode)
        return self._app

    def start_worker(self, *extra: str, concurrency: int = 2) -> WorkerProcess:
        env = child_env(
            {URL_ENV: URL, PREFIX_ENV: self.prefix, RUNS_ENV: str(self.runs), KOMBU_ENV: self.mode}
        )
        worker = start_cli_worker(
            "apps.routing_tasks", env, self.dir, *extra, concurrency=concurrency
        )
        self.workers.append(worker)
        return worker

    def lines(self) -> list[str]:
        return self.runs.read_text().split() if self.runs.exists() else []

    def runs_seen(self) -> list[Run]:
        return parse(self.lines())

    def wait_for_runs(self, condition: str, check: Callable[[list[Run]], bool]) -> None:
        wait_for_runs(condition, self.lines, lambda lines: check(parse(lines)), 30, self.workers)

    def topology(self) -> dict[str, Any]:
        """The broker's topology as the Redis transport stores it (one JSON document)."""
        import redis

        client = redis.Redis.from_url(URL)
        try:
            raw = client.get(f"{self.prefix}topology")
        finally:
            client.close()
        assert raw is not None, "nothing declared yet"
        document: dict[str, Any] = orjson.loads(raw)
        return document

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self._app is not None:
            self._app.close()
        delete_redis_keys(URL, self.prefix)


@pytest.fixture
def make_setup(tmp_path: Path) -> Iterator[Callable[[str], Setup]]:
    require_service("Redis", 6379)
    made: list[Setup] = []

    def make(mode: str) -> Setup:
        setup = Setup(tmp_path, mode)
        made.append(setup)
        return setup

    yield make
    for setup in made:
        setup.close()


def test_a_broadcast_task_runs_once_on_each_worker(make_setup: Callable[[str], Setup]) -> None:
    setup = make_setup("converted")
    first = setup.start_worker("-n", "first@%h")
    second = setup.start_worker("-n", "second@%h")
    pids = {first.pid, second.pid}

    def ran_everywhere(tag: str) -> Callable[[list[Run]], bool]:
        return lambda runs: {p for p, kind, t in runs if kind == "broadcast" and t == tag} == pids

    setup.app.send_task("rt.broadcast", ("b1",))
    setup.wait_for_runs("b1 on both workers", ran_everywhere("b1"))
    # each worker's queue is FIFO: once b2 ran on both, no copy of b1 is still to come
    setup.app.send_task("rt.broadcast", ("b2",))
    setup.wait_for_runs("b2 on both workers", ran_everywhere("b2"))
    counts = Counter((pid, tag) for pid, kind, tag in setup.runs_seen() if kind == "broadcast")
    assert counts == {(pid, tag): 1 for pid in pids for tag in ("b1", "b2")}
    bound = [b for b in setup.topology()["bindings"] if b[0] == BROADCAST]
    assert len({queue for _, queue, *_ in bound}) >= 2  # a queue of its own per worker


def test_a_producer_declares_the_broadcast_exchange_but_no_queue_of_its_own(
    make_setup: Callable[[str], Setup],
) -> None:
    """No worker runs: the send finds the fanout exchange declared and bound to no queue (a
    producer's own broadcast queue would collect a copy of every broadcast for nobody)."""
    setup = make_setup("converted")
    setup.app.send_task("rt.broadcast", ("nobody",))
    topology = setup.topology()
    assert topology["exchanges"].get(BROADCAST) == "fanout"
    assert [b for b in topology["bindings"] if b[0] == BROADCAST] == []


@pytest.mark.parametrize(
    "mode",
    [
        "converted",
        "as-is",
    ],
)
def test_a_kombu_queue_with_x_max_priority_3_on_a_real_worker(
    make_setup: Callable[[str], Setup], mode: str
) -> None:
    """``queue_arguments={"x-max-priority": 3}``: priorities 5 and 9 both count as 3, so they
    keep their order (A before B) and stay ahead of 1; 3 itself is their equal."""
    setup = make_setup(mode)
    for tag, priority in (("A", 5), ("B", 9), ("C", 1), ("D", 3)):
        setup.app.send_task("rt.prio", (tag,), priority=priority)
    [stored] = [q for q in setup.topology()["queues"] if q[0] == "prio"]
    assert stored[1] == 3  # the queue's priority range on the broker
    setup.start_worker("-Q", "prio", "--prefetch-multiplier", "1", concurrency=1)
    setup.wait_for_runs("the four tasks", lambda runs: len(runs) == 4)
    assert [tag for _, kind, tag in setup.runs_seen() if kind == "prio"] == ["A", "B", "D", "C"]
