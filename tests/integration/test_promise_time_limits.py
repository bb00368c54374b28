"""``task_time_limit``/``task_soft_time_limit`` and ``--time-limit``/``--soft-time-limit`` as
defaults, in real worker processes.

The promise (docs/guide/workers.md, "Time limits"): ``soft_time_limit`` and ``time_limit`` per
task, the app's ``task_soft_time_limit``/``task_time_limit`` as defaults, ``--soft-time-limit``/
``--time-limit`` per worker; a task's own limits win over the worker's, and the worker's over the
app's. tests/unit/test_pool_threads_limits.py holds a worker-wide soft limit given to an
in-process worker; here the settings and the command line reach real workers:

* a threads worker with no option, its app (and the sender's) setting 1 s hard and 0.4 s soft:
  a task with no limits of its own gets the soft limit (which it catches), then the hard one;
* a prefork worker with ``--time-limit 1 --soft-time-limit 0.5``, its app setting 60 s and 50 s
  (the sender's app sets none): the same task gets the worker's limits (its child is killed at
  1 s, not after a minute), and a task with limits of its own (30 s and 29 s) runs its 1.5 s to
  the end.

A sending app that sets ``task_time_limit`` stamps it on each message (``timelimit``), as Celery
5.7's ``apply_async`` does, and a message's limits come first: such a sender's setting wins over
the worker's ``--time-limit``.

Both workers start at once, each on a SQLite file of its own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.promise_tasks import BROKER_ENV, SETTINGS_ENV, build_app
from worker_harness import WorkerProcess, child_env

from celeriac import Celeriac, TimeLimitExceeded

WAIT = 20.0


class Limited:
    """A worker process and the test-side app on its broker, with the app's limit settings."""

    def __init__(
        self, root: Path, name: str, settings: dict[str, float], shared: bool, *options: str
    ) -> None:
        self.dir = root / name
        self.marks = self.dir / "marks"
        self.marks.mkdir(parents=True)
        url = f"sqlite:///{self.dir / 'broker.db'}"
        # shared: the sending app has the settings too (and stamps them on each message, as
        # Celery 5.7's apply_async does); else only the worker's app has them
        self.app: Celeriac = build_app(url, settings=dict(settings) if shared else None)
        env = child_env({BROKER_ENV: url, SETTINGS_ENV: json.dumps(settings)})
        args = [sys.executable, "-m", "celeriac", "-A", "apps.promise_tasks", "worker"]
        args += ["-c", "1", "-l", "info", *options]
        self.worker = WorkerProcess(args, env, self.dir)

    def close(self) -> None:
        try:
            self.worker.stop()
        finally:
            self.app.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[Limited, Limited]]:
    app_limits = {"task_time_limit": 1.0, "task_soft_time_limit": 0.4}
    by_app = Limited(tmp_path, "by-app", app_limits, True, "-P", "threads")
    by_worker = Limited(
        tmp_path,
        "by-worker",
        {"task_time_limit": 60.0, "task_soft_time_limit": 50.0},
        False,
        *("-P", "prefork", "--time-limit", "1", "--soft-time-limit", "0.5"),
    )
    try:
        for made in (by_app, by_worker):
            made.worker.wait_ready()
        yield by_app, by_worker
    finally:
        for made in (by_app, by_worker):
            made.close()


def test_the_apps_and_the_workers_time_limits_are_defaults(
    workers: tuple[Limited, Limited],
) -> None:
    by_app, by_worker = workers
    sent = {
        made: made.app.send_task("pr.stubborn", (str(made.marks), "soft"))
        for made in (by_app, by_worker)
    }
    own = by_worker.app.send_task("pr.own_limit", (1.5,))
    for made, result in sent.items():
        with pytest.raises(TimeLimitExceeded):
            result.get(timeout=WAIT)
        assert (made.marks / "soft").exists(), made.worker.output()  # the soft limit came first
    assert own.get(timeout=WAIT) == "ok"  # its own limits won over --time-limit 1
    stderr = by_worker.worker.stderr()
    assert "Hard time limit" in stderr or "TimeLimitExceeded" in stderr, by_worker.worker.output()
