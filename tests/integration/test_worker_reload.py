"""``--reload``: a real worker process restarts itself when the app's source changes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from worker_harness import WorkerProcess, wait_until

from celeriac import Celeriac

SOURCE = """
from celeriac import Celeriac

app = Celeriac("reloadable", broker="sqlite:///{db}", backend="sqlite:///{db}")


@app.task(name="r.version")
def version() -> str:
    return "{version}"
"""


def write_app(directory: Path, db: Path, version: str) -> None:
    (directory / "reloadable_tasks.py").write_text(SOURCE.format(db=db, version=version))


def test_a_source_change_restarts_the_worker_with_the_new_code(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    db = tmp_path / "broker.db"
    write_app(app_dir, db, "v1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env["PYTHONPATH"] = str(app_dir)
    args = [
        sys.executable,
        "-m",
        "celeriac",
        "-A",
        "reloadable_tasks",
        "worker",
        "-P",
        "threads",
        "-c",
        "1",
        "-l",
        "info",
        "--reload",
    ]
    producer = Celeriac("producer", broker=f"sqlite:///{db}", backend=f"sqlite:///{db}")
    worker = WorkerProcess(args, env, app_dir)
    try:
        worker.wait_ready()
        worker.wait_for_line(r"--reload: watching .*app")
        assert producer.send_task("r.version").get(timeout=15) == "v1"
        pid = worker.pid
        write_app(app_dir, db, "v2")
        worker.wait_for_line(r"restarting the worker", timeout=20)
        worker.wait_for_line(r"stopped \(warm\)")
        # the same process (exec), ready a second time, now running the new code
        assert producer.send_task("r.version").get(timeout=20) == "v2", worker.output()
        assert worker.pid == pid
        # the consumer takes work before the last components start and "ready" is logged, so
        # the new code can answer before that line: wait for it rather than expect it already
        wait_until(
            lambda: sum("ready: pool=threads" in line for line in worker.stderr_lines) == 2,
            10,
            "the restarted worker to log ready",
        )
    finally:
        worker.stop()
        producer.close()
