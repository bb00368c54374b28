"""``celeriac multi`` with real detached workers on SQLite in the test's directory: start, stop,
stopwait, restart and kill, found again by their pid files as an init script finds them.

Every worker a test starts is stopped by :class:`daemons.Daemons` at the end, whatever happened.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemons, wait_gone
from worker_harness import APP_SPEC, Harness

from celeriac.utils.daemon import process_alive

HOST = socket.gethostname()
NODES = [f"w1@{HOST}", f"w2@{HOST}"]
#: What an init script passes to every multi command, start and stop alike.
FILES = ["--pidfile=run/%n.pid", "--logfile=log/%n%I.log"]
WORKER = ["-A", APP_SPEC, "-P", "threads", "-c", "1", "-l", "info"]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def daemons(harness: Harness) -> Iterator[Daemons]:
    tracked = Daemons()
    tracked.track(*(harness.dir / "run" / f"{n}.pid" for n in ("w1", "w2")))
    try:
        yield tracked
    finally:
        tracked.stop_all()


def multi(harness: Harness, *args: str) -> tuple[int, str]:
    done = harness.run_cli("multi", *args, timeout=60)
    return done.returncode, done.stdout + done.stderr


def pids(harness: Harness, daemons: Daemons) -> list[int]:
    return [daemons.pid(harness.dir / "run" / f"{n}.pid") for n in ("w1", "w2")]


def test_start_then_stopwait(harness: Harness, daemons: Daemons) -> None:
    code, out = multi(harness, "start", "w1", "w2", *WORKER, *FILES)
    assert code == 0, out
    assert all(f"> {node}: OK" in out for node in NODES), out
    running = pids(harness, daemons)
    assert all(process_alive(pid) for pid in running) and running[0] != running[1]
    for node in ("w1", "w2"):  # each its own log, with %I empty for the worker itself
        assert (
            f"{node}@{HOST} ready: pool=threads"
            in (harness.dir / "log" / f"{node}.log").read_text()
        )
    assert harness.app.tasks["t.add"].delay(2, 3).get(timeout=20) == 5

    code, out = multi(harness, "start", "w1", "w2", *WORKER, *FILES)  # already running
    assert code == 1
    assert out.count("FAILED") == 2 and "names a running process" in out

    code, out = multi(harness, "stopwait", "w1", "w2", *FILES)
    assert code == 0, out
    assert f"> {NODES[0]}: SIGTERM -> {running[0]}" in out
    assert all(not process_alive(pid) for pid in running)  # stopwait returned after they left
    assert not list((harness.dir / "run").iterdir())  # each removed its pid file
    code, out = multi(harness, "stop", "w1", "w2", *FILES)
    assert code == 0 and f"> {NODES[1]}: DOWN" in out


def test_kill_then_restart_then_stop(harness: Harness, daemons: Daemons) -> None:
    code, out = multi(harness, "start", "2", "--range-prefix=w", *WORKER, *FILES)
    assert code == 0, out
    first = pids(harness, daemons)
    code, out = multi(harness, "kill", "2", "--range-prefix=w", *FILES)
    assert code == 0, out
    assert all(wait_gone(pid, 20) for pid in first)
    code, out = multi(harness, "restart", "w1", "w2", *WORKER, *FILES)  # stale pid files
    assert code == 0, out
    assert out.count("OK") == 2, out
    second = pids(harness, daemons)
    assert set(second).isdisjoint(first) and all(process_alive(pid) for pid in second)
    code, out = multi(harness, "restart", "w1", "w2", *WORKER, *FILES)  # running: stop first
    assert code == 0, out
    third = pids(harness, daemons)
    assert all(not process_alive(pid) for pid in second)
    assert all(process_alive(pid) for pid in third)
    code, out = multi(harness, "stop", "w1", "w2", *FILES)
    assert code == 0, out
    assert all(wait_gone(pid, 20) for pid in third)


def test_per_node_options_reach_their_node(harness: Harness, daemons: Daemons) -> None:
    code, out = multi(harness, "start", "w1", "w2", *WORKER, "-c:w2", "3", *FILES)
    assert code == 0, out
    logs = {n: (harness.dir / "log" / f"{n}.log").read_text() for n in ("w1", "w2")}
    assert "concurrency=1" in logs["w1"] and "concurrency=3" in logs["w2"]
    assert os.getsid(pids(harness, daemons)[0]) != os.getsid(0)
