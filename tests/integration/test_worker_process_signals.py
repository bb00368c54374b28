"""Celery's signals across real processes: a prefork worker whose app module connects receivers
(``apps.signal_tasks``), each writing a line per signal from the process that heard it.

What only real processes show: ``worker_process_init`` and ``worker_process_shutdown`` fire in
each child with the node name, ``worker_shutting_down`` names the OS signal, and a
``setup_logging`` receiver takes logging over in the worker and in every child.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.signal_tasks import OWN_LOGGING_ENV, SIGNAL_LOG_ENV
from worker_harness import Harness, WorkerProcess, start_cli_worker, wait_for_runs

HOST = socket.gethostname()
NODE = f"sig@{HOST}"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def start(harness: Harness, **env: str) -> tuple[WorkerProcess, Path]:
    log = harness.dir / "signals.log"
    worker = start_cli_worker(
        "apps.signal_tasks",
        {**harness.env(), SIGNAL_LOG_ENV: str(log), **env},
        harness.dir,
        "-n",
        "sig@%h",
        pool="prefork",
        concurrency=2,
    )
    harness.workers.append(worker)
    return worker, log


def lines(log: Path) -> list[tuple[str, int, str]]:
    """``(signal, pid of the process that heard it, details)`` per line."""
    found = []
    for line in log.read_text().splitlines():
        name, pid, *rest = line.split(" ", 2)
        found.append((name, int(pid), rest[0] if rest else ""))
    return found


def test_worker_and_child_process_signals(harness: Harness) -> None:
    worker, log = start(harness)
    assert harness.app.send_task("s.log", args=["hello"]).get(timeout=20) != worker.pid
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(20) == 0
    heard = lines(log)
    names = [name for name, _, _ in heard]
    parent = [(n, d) for n, pid, d in heard if pid == worker.pid]
    children = {pid for n, pid, _ in heard if n == "worker_process_init"}
    assert len(children) == 2 and worker.pid not in children

    assert parent[0] == ("celeryd_init", f"{NODE} pool=prefork")
    assert ("celeryd_after_setup", f"{NODE} queues=1") in parent
    assert parent.count(("worker_before_create_process", "PreforkPool")) == 2
    assert ("worker_ready", f"Consumer {NODE}") in parent
    assert ("worker_shutting_down", f"{NODE} sig=SIGTERM how=Warm exitcode=0") in parent
    assert parent[-1] == ("worker_shutdown", "Worker")
    assert ("after_setup_logger", "root logfile=None") in parent
    for pid in children:
        mine = [(n, d) for n, p, d in heard if p == pid]
        assert ("worker_process_init", NODE) in mine
        assert ("after_setup_logger", "root logfile=None") in mine  # each child sets up too
        assert mine[-1] == ("worker_process_shutdown", f"{NODE} pid={pid} exitcode=0")
    # Celery's order: children are up before the worker is ready; they leave after the
    # shutdown began and before the worker's last signal
    assert names.index("worker_ready") > max(
        i for i, n in enumerate(names) if n == "worker_process_init"
    )
    shutting = names.index("worker_shutting_down")
    leaving = [i for i, n in enumerate(names) if n == "worker_process_shutdown"]
    assert len(leaving) == 2 and shutting < min(leaving) and max(leaving) < len(names) - 1


def test_a_setup_logging_receiver_owns_logging_in_the_worker_and_children(
    harness: Harness,
) -> None:
    worker, log = start(harness, **{OWN_LOGGING_ENV: "1"})
    assert harness.app.send_task("s.log", args=["own-format"]).get(timeout=20) != worker.pid
    wait_for_runs(
        "the child's task line on stderr",
        lambda: worker.stderr_lines[:],
        lambda out: any("task says own-format" in line for line in out),
        20,
        [worker],
    )
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(20) == 0
    heard = lines(log)
    setups = {pid for name, pid, _ in heard if name == "setup_logging"}
    assert len(setups) == 3 and worker.pid in setups  # the worker and its two children
    assert not [h for h in heard if h[0] == "after_setup_logger"]  # celeriac configured none
    out = worker.stderr().splitlines()
    assert any(line.startswith("OWN INFO MainProcess") and "ready: pool=prefork" in line
               for line in out)  # fmt: skip
    assert any(line.startswith("OWN WARNING") and "own-format" in line for line in out)
    assert not [line for line in out if line.startswith("[")], out  # no celeriac-format line
