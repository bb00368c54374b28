"""Real workers on Redis: crashes, broker-side delays and a Redis restart, counting every task."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps.redis_tasks import LEASE_ENV, PREFIX_ENV, RUNS_ENV, URL_ENV, build_app
from redis_server import RedisServer
from worker_harness import WorkerProcess, child_env, start_cli_worker, wait_for_runs

from celeriac import Celeriac
from conftest import require_service

SHARED_URL = "redis://127.0.0.1:6379/14"


class Setup:
    def __init__(self, tmp_path: Path, url: str, lease: float) -> None:
        self.url = url
        self.prefix = f"itest-{uuid.uuid4().hex[:8]}:"
        self.lease = lease
        self.runs = tmp_path / "runs.txt"
        self.dir = tmp_path
        self.workers: list[WorkerProcess] = []
        self.app: Celeriac = build_app(url, self.prefix, lease, str(self.runs))

    def env(self) -> dict[str, str]:
        return child_env(
            {
                URL_ENV: self.url,
                PREFIX_ENV: self.prefix,
                LEASE_ENV: str(self.lease),
                RUNS_ENV: str(self.runs),
            }
        )

    def start_worker(self, pool: str = "threads") -> WorkerProcess:
        worker = start_cli_worker("apps.redis_tasks", self.env(), self.dir, pool=pool)
        self.workers.append(worker)
        return worker

    def runs_seen(self) -> list[str]:
        if not self.runs.exists():
            return []
        return self.runs.read_text().split()

    def wait_for_runs(
        self, condition: str, check: Callable[[list[str]], bool], timeout: float
    ) -> None:
        wait_for_runs(condition, self.runs_seen, check, timeout, self.workers)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.app.close()


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Setup]:
    require_service("Redis", 6379)
    setup = Setup(tmp_path, SHARED_URL, lease=2.0)
    yield setup
    setup.close()
    import redis

    client = redis.Redis.from_url(SHARED_URL)
    keys = list(client.scan_iter(match=f"{setup.prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_kill_9_during_1000_acks_late_tasks_a_second_worker_finishes_all(
    shared: Setup, pool: str
) -> None:
    first = shared.start_worker(pool)
    assert f"ready: pool={pool} " in first.output()
    results = shared.app.send_many([("r.record", (str(i), 0.002), {}) for i in range(1000)])
    shared.wait_for_runs("some tasks to run", lambda runs: len(runs) >= 100, 30)
    os.kill(first.pid, signal.SIGKILL)
    first.wait_exit(10)
    done_by_first = len(shared.runs_seen())
    assert done_by_first < 1000, "the first worker finished everything before it was killed"
    shared.start_worker(pool)
    shared.wait_for_runs("every task to run", lambda runs: len(set(runs)) == 1000, 60)
    assert [r.get(timeout=30) for r in results] == [str(i) for i in range(1000)]
    runs = shared.runs_seen()
    # acks_late: what the killed worker was running ran again; nothing else did
    assert len(runs) - 1000 <= 2 * 4, f"{len(runs) - 1000} tasks ran twice"


def test_a_countdown_longer_than_the_lease_runs_exactly_once(shared: Setup) -> None:
    shared.start_worker()
    sent = time.time()
    result = shared.app.send_task("r.record", ("late",), countdown=2.5)  # lease is 2 s
    assert result.get(timeout=20) == "late"
    date_done = result.date_done
    assert date_done is not None
    assert date_done - sent >= 2.5
    assert shared.runs_seen() == ["late"]


def test_a_redis_restart_during_5000_tasks_loses_none(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    setup = Setup(tmp_path, server.url, lease=3.0)
    try:
        worker = setup.start_worker()
        setup.app.send_many([("r.record", (str(i), 0.001), {}) for i in range(5000)])
        setup.wait_for_runs("a quarter of the tasks", lambda runs: len(runs) >= 1250, 60)
        server.stop()
        worker.wait_for_line(r"broker unavailable", timeout=20)
        server.start()
        setup.wait_for_runs("every task to run", lambda runs: len(set(runs)) == 5000, 120)
        worker.wait_for_line(r"broker is back", timeout=20)
        outage_lines = [line for line in worker.stderr_lines if "unavailable" in line]
        # one line per outage for each part that met it (broker, result backend, events)
        parts = [line.split("] ", 1)[-1].split(" unavailable")[0] for line in outage_lines]
        assert len(parts) == len(set(parts)) <= 3, "\n".join(outage_lines)
        assert "Traceback" not in worker.stderr()
    finally:
        setup.close()
        server.stop()
