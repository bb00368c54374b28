"""The SQLite backend across real processes: a result written elsewhere wakes a local waiter,
and chord counters stay exact when two processes increment one key at the same time.

Each child is a fresh ``python -c`` that prints ``ready`` once it has opened the database, then
blocks on stdin until the test says ``go``; that handshake (not a sleep) orders the steps.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from celeriac import states
from celeriac.results.base import ResultMeta
from celeriac.results.sqlite import SQLiteBackend

WRITER = textwrap.dedent(
    """
    import sys, time
    from celeriac import states
    from celeriac.results.base import ResultMeta
    from celeriac.results.sqlite import SQLiteBackend

    backend = SQLiteBackend(sys.argv[1])
    backend.get_meta("warm-up")
    print("ready", flush=True)
    sys.stdin.readline()
    time.sleep(0.2)  # let the parent settle into wait_for; correctness does not depend on it
    backend.store(ResultMeta(task_id=sys.argv[2], status=states.SUCCESS, result={"from": "child"}))
    backend.close()
    """
)

INCREMENTER = textwrap.dedent(
    """
    import json, sys, time
    from celeriac.results.sqlite import SQLiteBackend

    backend = SQLiteBackend(sys.argv[1])
    backend.incr(sys.argv[2], 0)
    print("ready", flush=True)
    sys.stdin.readline()
    pause = float(sys.argv[4])
    values = []
    for i in range(int(sys.argv[3])):
        values.append(backend.incr(sys.argv[2]))
        if pause and i % 10 == 9:
            time.sleep(pause)
    backend.close()
    print(json.dumps(values), flush=True)
    """
)


@contextmanager
def child(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A child process running ``script``, waited until ready, and always stopped afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def go(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()


def test_wait_for_sees_a_result_written_by_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    backend = SQLiteBackend(url)
    task_id = "task-from-child"
    try:
        backend.store(ResultMeta(task_id=task_id, status=states.STARTED))
        with child(WRITER, url, task_id) as proc:
            go(proc)
            meta = backend.wait_for(task_id, timeout=60)
            assert proc.wait(60) == 0
        assert meta.status == states.SUCCESS
        assert meta.result == {"from": "child"}
    finally:
        backend.close()


@pytest.mark.parametrize(
    "pause",
    [
        # Flat out: the second writer spends its time in SQLite's busy handler (one process
        # usually finishes all 500 before the other gets the lock): checks that it waits, not fails.
        0.0,
        # A short pause every 10 increments, so that the two processes take turns with the lock.
        0.001,
    ],
)
def test_incr_from_two_processes_is_exact(tmp_path: Path, pause: float) -> None:
    url = f"sqlite:///{tmp_path / 'counters.db'}"
    per_process = 500
    with (
        child(INCREMENTER, url, "chord", str(per_process), str(pause)) as first,
        child(INCREMENTER, url, "chord", str(per_process), str(pause)) as second,
    ):
        go(first)
        go(second)
        out_first, _ = first.communicate(timeout=60)
        out_second, _ = second.communicate(timeout=60)
        assert first.returncode == 0
        assert second.returncode == 0
    values = json.loads(out_first) + json.loads(out_second)
    assert sorted(values) == list(range(1, 2 * per_process + 1))
    backend = SQLiteBackend(url)
    try:
        assert backend.incr("chord", 0) == 2 * per_process
    finally:
        backend.close()


def _store_from_forked_child(backend: SQLiteBackend, task_id: str) -> None:
    backend.store(ResultMeta(task_id=task_id, status=states.SUCCESS, result="forked"))


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    """Prefork pools fork after the parent used the backend: the child must not reuse it."""
    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'fork.db'}")
    try:
        backend.store(ResultMeta(task_id="parent", status=states.STARTED))  # opens a connection
        proc = multiprocessing.get_context("fork").Process(
            target=_store_from_forked_child, args=(backend, "child")
        )
        proc.start()
        try:
            proc.join(60)
            assert proc.exitcode == 0
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join(30)
        assert backend.get_meta("child").result == "forked"
        assert backend.get_meta("parent").status == states.STARTED  # parent connection still fine
    finally:
        backend.close()
