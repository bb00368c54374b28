"""The ``celeriac`` command line against real processes: call and result with a worker running,
a broker that cannot be opened at start-up, and user mistakes (usage or one line, no traceback).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_harness import APP_SPEC, Harness, cmdline, fork_servers, pool_children

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def test_call_then_result_with_a_worker_running(harness: Harness) -> None:
    harness.start_worker()
    called = harness.run_cli("-A", APP_SPEC, "call", "t.add", "--args", "[2, 3]")
    assert called.returncode == 0, called.stderr
    task_id = called.stdout.strip()
    assert UUID.fullmatch(task_id), called.stdout
    shown = harness.run_cli("-A", APP_SPEC, "result", task_id, "--timeout", "10")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "SUCCESS: 5"
    # the test process's app sees the same result
    assert harness.app.AsyncResult(task_id).get(timeout=5) == 5


def test_a_worker_whose_broker_cannot_be_opened_exits_with_one_line(harness: Harness) -> None:
    not_a_dir = harness.dir / "file.txt"
    not_a_dir.write_text("a regular file, so nothing can be created under it\n")
    db = not_a_dir / "sub" / "db.sqlite"
    args = harness.celeriac_args("-A", APP_SPEC, "worker", "-c", "2", "-P", "threads")
    started = time.monotonic()
    done = subprocess.run(
        args,
        env=harness.env(db),
        cwd=harness.dir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert elapsed < 15, f"took {elapsed:.1f}s to give up"
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "CRITICAL" in line or "ERROR" in line]
    assert len(errors) == 1, done.stderr
    assert "cannot reach the broker" in errors[0]
    assert "file.txt" in errors[0]
    # anything else on stderr is a retry notice, one line each
    others = [line for line in lines if line not in errors]
    assert all("retry" in line for line in others), done.stderr
    assert not list(harness.dir.glob("**/db.sqlite"))


needs_proc = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(),
    reason="needs /proc/<pid>/task/<tid>/children (Linux)",
)


@needs_proc
def test_a_prefork_worker_forks_its_children_from_one_server(harness: Harness) -> None:
    """The command forks the fork server from itself once it has imported the app (the
    server's command line is the worker's: no interpreter of its own); the pool takes it."""
    worker = harness.start_worker(pool=None, concurrency=2)
    servers = fork_servers(worker.pid)
    assert len(servers) == 1
    assert cmdline(servers[0]) == cmdline(worker.pid)
    assert len(pool_children(worker.pid)) == 2  # forked by that server
    assert harness.app.tasks["t.add"].delay(2, 3).get(timeout=10) == 5


@needs_proc
def test_a_worker_whose_app_starts_a_thread_at_import_spawns_its_fork_server(
    harness: Harness,
) -> None:
    """A process that runs a thread is not forked (a lock the thread held would stay held in
    every child): the command spawns the server, which imports the app itself."""
    worker = harness.start_worker(pool=None, concurrency=2, app_spec="apps.thread_at_import")
    servers = fork_servers(worker.pid)
    assert len(servers) == 1
    assert b"multiprocessing.forkserver" in cmdline(servers[0])
    assert len(pool_children(worker.pid)) == 2
    assert harness.app.tasks["t.add"].delay(2, 3).get(timeout=10) == 5


@needs_proc
def test_a_worker_of_another_pool_keeps_no_fork_server(harness: Harness) -> None:
    """No -P: the command starts a fork server ahead for prefork, the default; the app's
    settings choose threads, and the server is stopped."""
    worker = harness.start_worker(pool=None, env={"CELERIAC_WORKER_POOL": "threads"})
    assert " pool=threads" in worker.output()
    assert fork_servers(worker.pid) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["-A", APP_SPEC, "worker", "--concurrency", "zero"],
            "'zero' is not a valid integer",
            id="bad-concurrency",
        ),
        pytest.param(
            ["-A", APP_SPEC, "worker", "--concurrency", "0"],
            "--concurrency",
            id="zero-concurrency",
        ),
        pytest.param(["worker"], "-A", id="no-app"),
        pytest.param(["-A", "nosuchmodule", "worker"], "nosuchmodule", id="no-such-module"),
        pytest.param(["-A", APP_SPEC, "wrker"], "wrker", id="unknown-command"),
        pytest.param(["-A", APP_SPEC, "call", "t.add", "--args", "[2, 3"], "--args", id="bad-json"),
    ],
)
def test_cli_mistakes_print_usage_not_a_traceback(
    harness: Harness, args: list[str], expected: str
) -> None:
    done = harness.run_cli(*args, timeout=20)
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert expected in errors[0], done.stderr
    assert "Usage:" in done.stderr or "Try " in done.stderr, done.stderr
