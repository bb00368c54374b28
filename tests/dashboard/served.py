"""A real ``celeriac dashboard`` process (uvicorn) for the CLI and browser tests: started on a
free loopback port with known tokens, waited for until it serves, always stopped."""

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
#: The secrets of both roles, as the dashboard reads them.
SECRETS = {
    "CELERIAC_DASHBOARD_TOKEN": OPERATOR_TOKEN,
    "CELERIAC_DASHBOARD_READONLY_TOKEN": VIEWER_TOKEN,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dashboard(
    app_spec: str, env: dict[str, str], cwd: Path, db: Path, *extra: str, port: int = 0
) -> tuple[WorkerProcess, str]:
    """``celeriac -A app_spec dashboard --port P --db db *extra``, waited for until it listens;
    returns the process (the caller stops it) and its base URL."""
    port = port or free_port()
    args = [sys.executable, "-m", "celeriac", "-A", app_spec, "dashboard", "--port", str(port)]
    args += ["--db", str(db), *extra]
    process = WorkerProcess(args, {**SECRETS, **env}, cwd)
    try:
        process.wait_for_line(STARTED, timeout=30)
    except BaseException:
        process.stop()
        raise
    return process, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def dashboard_process(
    harness: Harness, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[WorkerProcess, str]]:
    """``celeriac -A apps.sqlite_tasks dashboard --port P`` on the harness's broker; yields the
    process and its base URL."""
    port = free_port()
    process, url = start_dashboard(
        APP_SPEC,
        {**harness.env(), **(env or {})},
        Path(harness.dir),
        harness.dir / f"dashboard-{port}.db",
        "--poll-interval",
        "0.5",
        *extra,
        port=port,
    )
    try:
        yield process, url
    finally:
        process.stop()
