"""Workflows on real prefork workers (the default pool), on Redis and SQLite, and a chord whose
worker is killed with SIGKILL in the middle of its header: the header tasks it held are run by a
second worker and the body still runs exactly once."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.canvas_tasks import Boom, runs
from apps.canvas_worker import PREFIX_ENV, URL_ENV, build_app
from worker_harness import WorkerProcess, child_env, start_cli_worker

from celeriac import ChordError, Signature, chord, group
from conftest import delete_redis_keys, require_service

REDIS_URL = "redis://127.0.0.1:6379/14"  # under a key prefix per test (13: the bench)
TIMEOUT = 30.0


class Setup:
    def __init__(self, url: str, prefix: str, tmp_path: Path) -> None:
        self.url, self.prefix, self.dir = url, prefix, tmp_path
        self.app, self.tasks = build_app(url, prefix)
        self.workers: list[WorkerProcess] = []

    def start_worker(self) -> WorkerProcess:
        env = child_env({URL_ENV: self.url, PREFIX_ENV: self.prefix})
        worker = start_cli_worker("apps.canvas_worker", env, self.dir, pool="prefork")
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.app.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    prefix = f"canvas-prefork-{uuid.uuid4().hex[:8]}:"
    if request.param == "redis":
        require_service("Redis", 6379)
        url = REDIS_URL
    else:
        url = f"sqlite:///{tmp_path / 'canvas.db'}"
    env = Setup(url, prefix, tmp_path)
    yield env
    env.close()
    if request.param == "redis":
        delete_redis_keys(REDIS_URL, prefix)


def test_workflows_on_prefork_workers(setup: Setup) -> None:
    setup.start_worker()
    t, app = setup.tasks, setup.app
    assert (t.add.s(2, 2) | t.add.s(4) | t.mul.s(2)).apply_async().get(timeout=TIMEOUT) == 16
    nested = t.add.s(1, 1) | chord([t.add.s(1), t.add.s(2) | t.aadd.s(3)], t.tsum.s())
    assert nested.apply_async().get(timeout=TIMEOUT) == 3 + 7
    assert group(t.add.s(i, i) for i in range(20)).apply_async().get(timeout=TIMEOUT) == [
        i * 2 for i in range(20)
    ]
    assert t.replacer.delay(3).get(timeout=TIMEOUT) == 8
    failed = chord([t.add.s(1, 1), t.fail.s()], t.tsum.s()).apply_async()
    with pytest.raises(Boom):
        failed.get(timeout=TIMEOUT)
    assert isinstance(failed.result, ChordError)
    with pytest.raises(Boom):
        (t.add.s(1, 1) | t.fail.s() | t.add.s(1)).apply_async().get(timeout=TIMEOUT)
    tag = uuid.uuid4().hex
    result = chord((t.add.s(i, 0) for i in range(300)), t.counted_sum.s(tag)).apply_async()
    assert result.get(timeout=TIMEOUT) == sum(range(300))
    assert runs(app, tag) == 1


@pytest.mark.redis
def test_kill_9_during_a_chord_header_the_body_runs_once(tmp_path: Path) -> None:
    require_service("Redis", 6379)
    prefix = f"canvas-kill-{uuid.uuid4().hex[:8]}:"
    setup = Setup(REDIS_URL, prefix, tmp_path)
    try:
        tag = uuid.uuid4().hex
        first = setup.start_worker()
        header = [Signature("canvas.slow_add", (i, 0, tag), app=setup.app) for i in range(400)]
        result = chord(header, setup.tasks.counted_sum.s(f"{tag}-body")).apply_async()
        deadline = time.monotonic() + TIMEOUT
        while runs(setup.app, tag) < 60:
            assert time.monotonic() < deadline, first.output()
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)  # its leased messages come back after the lease
        first.wait_exit(10)
        setup.start_worker()
        assert result.get(timeout=60) == sum(range(400))
        assert runs(setup.app, f"{tag}-body") == 1
        assert runs(setup.app, tag) >= 400, "every member ran"  # the killed ones ran again
    finally:
        setup.close()
        delete_redis_keys(REDIS_URL, prefix)
