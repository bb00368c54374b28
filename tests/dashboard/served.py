"""A real ``celeriac dashboard`` process (uvicorn) for the CLI and browser tests: started on a
free loopback port with a known token, waited for until it serves, always stopped."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from dashboard_support import OPERATOR_TOKEN, VIEWER_TOKEN, Harness
from worker_harness import APP_SPEC, WorkerProcess

#: What uvicorn logs once it listens (after the app's start-up, the dashboard's, is done).
STARTED = "Uvicorn running on"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dashboard_process(
    harness: Harness, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[WorkerProcess, str]]:
    """``celeriac -A apps.sqlite_tasks dashboard --port P`` on the harness's broker; yields the
    process and its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "celeriac", "-A", APP_SPEC, "dashboard", "--port", str(port)]
    args += ["--db", str(harness.dir / f"dashboard-{port}.db"), "--poll-interval", "0.5", *extra]
    secrets = {
        "CELERIAC_DASHBOARD_TOKEN": OPERATOR_TOKEN,
        "CELERIAC_DASHBOARD_READONLY_TOKEN": VIEWER_TOKEN,
    }
    process = WorkerProcess(args, {**harness.env(), **secrets, **(env or {})}, Path(harness.dir))
    try:
        process.wait_for_line(STARTED, timeout=20)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.stop()
