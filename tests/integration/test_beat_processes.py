"""Beat with real processes on every broker: two beats fire each 1 s slot once; the leader is
killed with SIGKILL and the other takes over within the lease, firing the slots that passed; an
entry added and paused from the command line while they run; the other beat stopped and the killed
one restarted. Every firing runs on a real worker, which writes the slot it was fired for to a
file: the test reads every slot from the first to the last exactly once."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from apps.beat_tasks import BROKER_ENV, OPTIONS_ENV, QUEUE_ENV, RUNS_ENV
from worker_harness import INTEGRATION_DIR, WorkerProcess, child_env, wait_for_runs

from conftest import delete_redis_keys, require_service

LEASE = 3.0
LEADS = r"leads now"


class Fleet:
    """The processes of one test: a worker and any number of beats, all stopped at the end."""

    def __init__(self, tmp_path: Path, broker: str, options: dict[str, Any]) -> None:
        self.runs = tmp_path / "runs.txt"
        self.queue = f"beat-{uuid.uuid4().hex[:8]}"
        self.broker = broker
        self.env = child_env(
            {
                BROKER_ENV: broker,
                OPTIONS_ENV: orjson.dumps(options).decode(),
                QUEUE_ENV: self.queue,
                RUNS_ENV: str(self.runs),
            }
        )
        self.processes: list[WorkerProcess] = []

    def start(self, *args: str) -> WorkerProcess:
        command = [sys.executable, "-m", "celeriac", "-A", "apps.beat_tasks", *args]
        process = WorkerProcess(command, self.env, INTEGRATION_DIR)
        self.processes.append(process)
        return process

    def worker(self) -> WorkerProcess:
        # one at a time: the tasks run in the order they were sent (the test's last one, last)
        process = self.start("worker", "-P", "solo", "-Q", self.queue, "-l", "info")
        process.wait_ready()
        return process

    def beat(self) -> WorkerProcess:
        return self.start("beat", "-l", "info", "--lease", str(LEASE))

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "celeriac", "-A", "apps.beat_tasks", "beat", *args],
            env=self.env,
            cwd=INTEGRATION_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def call(self, task: str, kwargs_json: str) -> None:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "celeriac",
                "-A",
                "apps.beat_tasks",
                "call",
                task,
                "--kwargs",
                kwargs_json,
                "--queue",
                self.queue,
            ],
            env=self.env,
            cwd=INTEGRATION_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    def lines(self) -> list[tuple[str, str]]:
        if not self.runs.exists():
            return []
        found = []
        for line in self.runs.read_text().splitlines():
            tag, _, slot = line.partition(" ")
            found.append((tag, slot))
        return found

    def count(self, tag: str) -> int:
        return sum(1 for t, _ in self.lines() if t == tag)

    def wait(self, what: str, tag: str, at_least: int, timeout: float = 20.0) -> None:
        wait_for_runs(
            what,
            lambda: [t for t, _ in self.lines() if t == tag],
            lambda seen: len(seen) >= at_least,
            timeout,
            self.processes,
        )

    def close(self) -> None:
        for process in self.processes:
            process.stop()


def leader_of(beats: list[WorkerProcess], timeout: float = 15.0) -> WorkerProcess:
    """The beat that says it leads (they start together: one wins the lease)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for beat in beats:
            try:
                beat.wait_for_line(LEADS, timeout=0.1)
                return beat
            except AssertionError:
                if not beat.running:
                    raise
    raise AssertionError("no beat took the lead\n" + "\n".join(b.output() for b in beats))


Cleanup = Callable[[Fleet], None]


def broker_setup(kind: str, tmp_path: Path) -> tuple[str, dict[str, Any], Cleanup | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'beat.db'}", {}, None
    if kind == "redis":
        require_service("Redis", 6379)
        url = "redis://127.0.0.1:6379/13"
        prefix = f"beat-itest-{uuid.uuid4().hex[:8]}:"
        return url, {"key_prefix": prefix}, lambda _: delete_redis_keys(url, prefix)
    require_service("RabbitMQ", 5672)
    from amqp_broker import URL, delete, ensure_vhost

    ensure_vhost()
    prefix = f"celeriac.beat-itest-{uuid.uuid4().hex[:8]}"

    def cleanup(fleet: Fleet) -> None:
        beat_queues = [f"{prefix}.{part}" for part in ("leader", "state", "view", "commands")]
        delete([*beat_queues, fleet.queue, f"{fleet.queue}.dlq"])

    return URL, {"beat_queue_prefix": prefix}, cleanup


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    url, options, cleanup = broker_setup(request.param, tmp_path)
    fleet = Fleet(tmp_path, url, options)
    try:
        yield fleet
    finally:
        fleet.close()
        if cleanup is not None:
            cleanup(fleet)


def test_beats_fail_over_and_change_at_run_time_firing_each_slot_once(fleet: Fleet) -> None:
    fleet.worker()
    beats = [fleet.beat(), fleet.beat()]
    leader = leader_of(beats)
    (other,) = [b for b in beats if b is not leader]
    fleet.wait("the first ticks", "tick", 4)

    # the leader dies without a word: the other takes over within the lease
    leader.send(signal.SIGKILL)
    killed_at, killed_wall = time.monotonic(), time.time()
    other.wait_for_line(LEADS, timeout=LEASE + 5)
    failover = time.monotonic() - killed_at
    assert failover <= LEASE + 2, failover
    before = fleet.count("tick")
    fleet.wait("ticks from the new leader", "tick", before + 2)

    # an entry added and paused from another process reaches the leader within a second
    fleet.cli("add", "tock", "beat.tick", "--every", "1", "--kwargs", '{"tag": "tock"}')
    fleet.wait("tocks", "tock", 2)
    assert "tock" in fleet.cli("list")
    fleet.cli("pause", "tock")
    ticks = fleet.count("tick")
    fleet.wait("ticks after the pause", "tick", ticks + 3)  # > 2 polls and a tick in flight
    paused_tocks = fleet.count("tock")
    fleet.wait("more ticks while paused", "tick", ticks + 5)
    assert fleet.count("tock") == paused_tocks

    # the killed beat comes back; the other stops cleanly: the lease moves at once
    restarted = fleet.beat()
    other.send(signal.SIGTERM)
    assert other.wait_exit(10) == 0
    restarted.wait_for_line(LEADS, timeout=LEASE + 5)
    ticks = fleet.count("tick")
    fleet.wait("ticks from the restarted beat", "tick", ticks + 3)
    restarted.send(signal.SIGTERM)
    assert restarted.wait_exit(10) == 0
    # a last task behind every tick sent: the worker runs one at a time, in order
    fleet.call("beat.tick", '{"tag": "end"}')
    fleet.wait("the worker to run every tick sent", "end", 1)

    slots = [s for t, s in fleet.lines() if t == "tick"]
    counts = Counter(slots)
    doubled = {s: n for s, n in counts.items() if n > 1}
    if fleet.broker.startswith("amqp") and len(doubled) == 1:
        # RabbitMQ's documented limit (docs/guide/beat.md): it cannot check a slot as it takes
        # the publish, so a leader killed between a slot's publish and its record leaves that
        # slot to the next leader. Only that: one slot, twice, fired just before the SIGKILL.
        [(slot, times)] = doubled.items()
        fired = datetime.fromisoformat(slot).timestamp()
        assert times == 2 and killed_wall - 3 <= fired <= killed_wall, (doubled, killed_wall)
        doubled = {}
    assert not doubled, doubled
    instants = sorted(datetime.fromisoformat(s).timestamp() for s in counts)
    gaps = [b - a for a, b in itertools.pairwise(instants)]
    assert all(gap == 1.0 for gap in gaps), gaps  # no slot skipped, through both hand-overs
    assert len(instants) >= 15


def test_run_now_sends_once_outside_the_schedule(fleet: Fleet) -> None:
    fleet.worker()
    beat = fleet.beat()
    beat.wait_for_line(LEADS, timeout=15)
    fleet.cli("add", "manual", "beat.tick", "--cron", "0 3 1 1 *", "--kwargs", '{"tag": "m"}')
    # on RabbitMQ another process sees an entry once the leader has applied the change
    wait_for_runs(
        "the entry to be visible",
        lambda: fleet.cli("list").splitlines(),
        lambda lines: any(line.startswith("manual ") for line in lines),
        10,
        fleet.processes,
    )
    out = fleet.cli("run-now", "manual")
    assert "sent manual" in out
    fleet.wait("the manual run", "m", 1)
    assert ("m", "manual") in fleet.lines()  # sent outside the schedule: no slot header


def test_every_worker_of_a_fleet_may_embed_a_beat(tmp_path: Path) -> None:
    """``worker -B`` on both workers of a fleet (SQLite): one embedded beat leads, every slot
    runs once."""
    fleet = Fleet(tmp_path, f"sqlite:///{tmp_path / 'beat.db'}", {})
    try:
        workers = [
            fleet.start("worker", "-B", "-P", "threads", "-Q", fleet.queue, "-l", "info", "-n", n)
            for n in ("w1@%h", "w2@%h")
        ]
        for worker in workers:
            worker.wait_ready()
        leader_of(workers)
        fleet.wait("ticks", "tick", 6)
        for worker in workers:
            worker.send(signal.SIGTERM)
            assert worker.wait_exit(15) == 0
        counts = Counter(s for t, s in fleet.lines() if t == "tick")
        assert all(n == 1 for n in counts.values()), counts
    finally:
        fleet.close()
