"""The worker as deployments run it, with real processes on SQLite: pid files, log files per node
and per prefork child, ``-n w1@%h``, ``--detach``, and ``--statedb`` across a restart.

Detached workers are stopped by :class:`daemons.Daemons` whatever the test did; attached ones
by the harness. Every wait is on a line, a result, a file the worker writes or a process exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import Daemons, wait_gone
from worker_harness import APP_SPEC, Harness, WorkerProcess, wait_for_runs, wait_until

from celeriac import TaskRevokedError
from celeriac.utils.daemon import process_alive

HOST = socket.gethostname()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    tracked = Daemons()
    try:
        yield tracked
    finally:
        tracked.stop_all()


# -- pid files ------------------------------------------------------------------------------------


def test_a_pid_file_keeps_a_second_worker_out_and_goes_at_exit(harness: Harness) -> None:
    pidfile = harness.dir / "w1.pid"
    first = harness.start_worker("--pidfile", "%n.pid", name="w1@%h")
    assert pidfile.read_text() == f"{first.pid}\n"
    second = harness.start_worker("--pidfile", str(pidfile), name="w1@%h", ready=False)
    assert second.wait_exit(20) == 1
    assert f"pid file {pidfile} names a running process (pid {first.pid})" in second.stderr()
    assert pidfile.read_text() == f"{first.pid}\n"  # the loser did not touch it
    first.send(signal.SIGQUIT)  # cold: the worker leaves through os._exit
    assert first.wait_exit(20) == 0
    assert not pidfile.exists()


def test_a_stale_pid_file_is_replaced(harness: Harness) -> None:
    pidfile = harness.dir / "w1.pid"
    pidfile.write_text("999999999\n")  # no such process
    worker = harness.start_worker("--pidfile", str(pidfile))
    assert pidfile.read_text() == f"{worker.pid}\n"
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(20) == 0
    assert not pidfile.exists()


# -- names and log files ---------------------------------------------------------------------------


def test_the_node_name_expands_like_celerys(harness: Harness) -> None:
    worker = harness.start_worker(name="w1@%h")
    assert f"w1@{HOST} ready: pool=" in worker.wait_ready()
    other = harness.start_worker(name="example.com")  # no '@': the host part
    assert "celeriac@example.com ready: pool=" in other.wait_ready()


def test_each_prefork_child_logs_to_its_own_file_with_percent_I(harness: Harness) -> None:
    main_log = harness.dir / "lw.log"
    worker = start_logging_worker(harness, "-n", "lw@%h", "-f", "%n%I.log")
    wait_for_text(main_log, f"lw@{HOST} ready: pool=prefork", [worker])
    results = [harness.app.send_task("s.log", args=[f"marker-{i}"]) for i in range(4)]
    pids = {r.get(timeout=20) for r in results}
    assert worker.pid not in pids  # run in the children
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(20) == 0
    assert worker.stderr() == ""  # every line went to the files
    assert "marker-" not in main_log.read_text()
    assert "stopped (warm)" in main_log.read_text()
    children = [(harness.dir / f"lw-{i}.log").read_text() for i in (1, 2)]
    assert sorted(m for text in children for m in _markers(text)) == [
        f"marker-{i}" for i in range(4)
    ]
    assert not (harness.dir / "lw-0.log").exists() and not (harness.dir / "lw-3.log").exists()


def test_without_percent_I_the_children_append_to_the_workers_file(harness: Harness) -> None:
    log = harness.dir / "all.log"
    worker = start_logging_worker(harness, "-f", "all.log")
    wait_for_text(log, "ready: pool=prefork", [worker])
    assert harness.app.send_task("s.log", args=["shared-file"]).get(timeout=20) != worker.pid
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(20) == 0
    text = log.read_text()
    assert "task says shared-file" in text and "stopped (warm)" in text
    assert list(harness.dir.glob("all*.log")) == [log]


# -- detaching ------------------------------------------------------------------------------------


def test_detach_returns_once_the_worker_consumes(harness: Harness, daemons: Daemons) -> None:
    pidfile, logfile = harness.dir / "d1.pid", harness.dir / "d1.log"
    daemons.track(pidfile)
    done = harness.run_cli(
        "-A", APP_SPEC, "worker", "--detach", "-P", "threads", "-c", "1", "-l", "info",
        "-n", "d1@%h", "--pidfile", "%n.pid", "--logfile", "%n%I.log",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pid = daemons.pid(pidfile)  # written before the command returned
    assert process_alive(pid)
    assert os.getsid(pid) != os.getsid(0)  # its own session: no terminal to lose
    assert f"d1@{HOST} ready: pool=threads" in logfile.read_text()
    assert harness.app.tasks["t.add"].delay(2, 3).get(timeout=20) == 5
    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 20)
    assert not pidfile.exists()
    assert "stopped (warm)" in logfile.read_text()


def test_a_detached_worker_that_cannot_start_says_why(harness: Harness, daemons: Daemons) -> None:
    pidfile = harness.dir / "bad.pid"
    daemons.track(pidfile)
    not_a_dir = harness.dir / "file.txt"
    not_a_dir.write_text("a file: nothing can be created under it\n")
    done = harness.run_cli(
        "-A", APP_SPEC, "-b", f"sqlite:///{not_a_dir}/sub/x.db", "worker", "--detach",
        "-P", "threads", "--pidfile", str(pidfile), "--logfile", "bad.log",
        env={"CELERIAC_BROKER_CONNECTION_MAX_RETRIES": "0"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "cannot reach the broker" in done.stderr
    assert "the detached worker stopped before it was ready" in done.stderr
    assert "Traceback" not in done.stderr
    assert not pidfile.exists()  # written, then removed as it left


def test_detach_refuses_a_node_that_already_runs(harness: Harness, daemons: Daemons) -> None:
    pidfile = harness.dir / "w1.pid"
    worker = harness.start_worker("--pidfile", str(pidfile))
    done = harness.run_cli("-A", APP_SPEC, "worker", "-D", "--pidfile", str(pidfile))
    assert done.returncode == 1
    assert f"names a running process (pid {worker.pid})" in done.stderr


# -- the state file -------------------------------------------------------------------------------


def test_a_revoke_survives_a_restart_with_statedb(harness: Harness) -> None:
    state = harness.dir / "w1.state"
    worker = harness.start_worker("-S", "%n.state", name="w1@%h")
    task_id = str(uuid.uuid4())
    harness.app.control.revoke(task_id)
    wait_until(lambda: task_id in _saved_ids(state), 20, "the revoke to reach the state file")
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(20) == 0
    result = harness.app.tasks["t.add"].apply_async((1, 2), task_id=task_id)
    again = harness.start_worker("-S", str(state), name="w1@%h")
    with pytest.raises(TaskRevokedError):
        result.get(timeout=20)
    assert f"state file {state}: 1 revoked ids loaded" in again.stderr()
    assert harness.app.tasks["t.add"].delay(2, 2).get(timeout=20) == 4


def test_a_state_file_that_is_not_one_stops_the_worker(harness: Harness) -> None:
    state = harness.dir / "broken.state"
    state.write_text("this is not JSON")
    worker = harness.start_worker("--statedb", str(state), ready=False)
    assert worker.wait_exit(20) == 1
    assert f"--statedb {state}:" in worker.stderr()
    assert "Traceback" not in worker.stderr()
    assert state.read_text() == "this is not JSON"  # left for the user to look at


# -- helpers ---------------------------------------------------------------------------------------


def start_logging_worker(harness: Harness, *extra: str) -> WorkerProcess:
    """A prefork worker of ``apps.signal_tasks`` (it has ``s.log``) on the harness's broker,
    logging at INFO to the file ``extra`` names; the harness stops it."""
    args = harness.celeriac_args(
        "-A", "apps.signal_tasks", "worker", "-P", "prefork", "-c", "2", "-l", "info", *extra
    )
    worker = WorkerProcess(args, harness.env(), harness.dir)
    harness.workers.append(worker)
    return worker


def wait_for_text(path: Path, text: str, workers: list[WorkerProcess]) -> None:
    """Until ``text`` is in the file ``path`` (a worker logging to a file prints nothing)."""

    def read() -> list[str]:
        return [path.read_text()] if path.exists() else []

    wait_for_runs(f"{text!r} in {path.name}", read, lambda t: bool(t) and text in t[0], 20,
                  workers)  # fmt: skip


def _markers(text: str) -> list[str]:
    return [line.rsplit("task says ", 1)[1] for line in text.splitlines() if "task says " in line]


def _saved_ids(path: Path) -> set[str]:
    try:
        return {entry[0] for entry in json.loads(path.read_text())["revoked"]}
    except (FileNotFoundError, ValueError, KeyError):
        return set()


def test_worker_log_format_shapes_the_worker_and_its_children(harness: Harness) -> None:
    args = harness.celeriac_args(
        "-A", "apps.signal_tasks", "worker", "-P", "prefork", "-c", "1", "-l", "info"
    )
    env = {**harness.env(), "CELERIAC_WORKER_LOG_FORMAT": "SHAPED %(levelname)s %(message)s"}
    worker = WorkerProcess(args, env, harness.dir)
    harness.workers.append(worker)
    assert worker.wait_ready().startswith("SHAPED INFO ")
    assert harness.app.send_task("s.log", args=["in-child"]).get(timeout=20) != worker.pid
    assert worker.wait_for_line("task says in-child", 20).startswith("SHAPED WARNING ")


def test_detach_with_a_relative_workdir(harness: Harness, daemons: Daemons) -> None:
    """The daemon runs the same command line from the directory it moved to: a relative
    --workdir must not lead it one step further."""
    sub = harness.dir / "sub"
    sub.mkdir()
    daemons.track(sub / "w.pid")
    done = harness.run_cli(
        "--workdir", "sub", "-A", APP_SPEC, "worker", "-D", "-P", "threads", "-c", "1",
        "--pidfile", "w.pid", "--logfile", "w.log",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pid = daemons.pid(sub / "w.pid")
    assert os.readlink(f"/proc/{pid}/cwd") == str(sub)
    assert (sub / "w.log").exists()
