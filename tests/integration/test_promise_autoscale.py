"""The autoscaler shrinks a live prefork worker to what is busy, sparing the busy child.

The promise (docs/guide/workers.md, "Autoscaling"): ``--autoscale MAX,MIN`` grows the pool at
once to cover the backlog and shrinks it to what is busy after a while without backlog.
tests/integration/test_prefork.py holds the growing; here a worker grows to three children for
three blocked tasks, two of them end, and the pool shrinks to the one still busy: the two idle
children leave, the busy one keeps running its task to the end, and the worker goes on.

The wait before shrinking is the policy's ``keepalive`` (30 s); the worker here uses the
documented hook (``worker_autoscaler``) to load the default policy with a keepalive of 1 s
(:class:`apps.promise_tasks.QuickAutoscaler`), so the shrinking shows in seconds.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.promise_tasks import BROKER_ENV, SETTINGS_ENV, build_app
from worker_harness import WorkerProcess, child_env, pool_children, wait_until

from celeriac import Celeriac, states

WAIT = 20.0
TAGS = ("a", "b", "c")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children(pid: int) -> set[int]:
    """The live pool children of ``pid`` (Linux /proc)."""
    return {p for p in pool_children(pid) if alive(p)}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Celeriac, WorkerProcess, Path]]:
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs /proc/<pid>/task/<tid>/children (Linux)")
    url = f"sqlite:///{tmp_path / 'broker.db'}"
    settings = {"worker_autoscaler": "apps.promise_tasks:QuickAutoscaler"}
    env = child_env({BROKER_ENV: url, SETTINGS_ENV: json.dumps(settings)})
    args = [sys.executable, "-m", "celeriac", "-A", "apps.promise_tasks", "worker"]
    args += ["-P", "prefork", "--autoscale", "3,1", "-l", "info"]
    worker = WorkerProcess(args, env, tmp_path)
    app = build_app(url)
    try:
        worker.wait_ready()
        yield app, worker, tmp_path
    finally:
        for tag in TAGS:
            (tmp_path / f"release-{tag}").touch()
        worker.stop()
        app.close()


def test_the_autoscaler_shrinks_a_live_worker_to_what_is_busy(
    setup: tuple[Celeriac, WorkerProcess, Path],
) -> None:
    app, worker, root = setup
    marks = root / "marks"
    marks.mkdir()
    assert len(children(worker.pid)) == 1  # MIN
    results = {
        tag: app.send_task("pr.block", (str(marks), tag, str(root / f"release-{tag}")))
        for tag in TAGS
    }
    wait_until(lambda: all((marks / t).exists() for t in TAGS), WAIT, "three tasks running")
    pids = {tag: int((marks / tag).read_text()) for tag in TAGS}
    assert len(set(pids.values())) == 3  # grown to MAX: one child each
    worker.wait_for_line(r"autoscale: \d -> 3", WAIT)

    for tag in ("a", "b"):
        (root / f"release-{tag}").touch()
        assert results[tag].get(timeout=WAIT)["pid"] == pids[tag]
    # no backlog for a keepalive: down to the one busy child, the idle ones retired
    worker.wait_for_line(r"autoscale: 3 -> 1", WAIT)
    wait_until(lambda: children(worker.pid) == {pids["c"]}, WAIT, "the idle children to leave")
    assert results["c"].state == states.PENDING  # still running, in the child that stayed

    (root / "release-c").touch()
    assert results["c"].get(timeout=WAIT) == {"pid": pids["c"], "delivery_count": 1}
    assert app.send_task("pr.add", (2, 2)).get(timeout=WAIT) == 4
    assert children(worker.pid) == {pids["c"]}  # the worker went on at its new size
    assert worker.running and "Traceback" not in worker.stderr(), worker.output()
