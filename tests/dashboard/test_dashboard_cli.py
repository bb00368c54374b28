"""``celeriac dashboard`` as a real process: it binds 127.0.0.1, prints a token when none is set,
serves until SIGTERM and leaves with status 0; mistakes print the usage, not a traceback;
``--hash-password`` prints a hash the dashboard accepts."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_support import Harness
from served import dashboard_process

from celeriac.dashboard.auth import verify_password


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


def test_it_serves_on_loopback_prints_a_token_and_stops_on_sigterm(harness: Harness) -> None:
    unset = {"CELERIAC_DASHBOARD_TOKEN": "", "CELERIAC_DASHBOARD_READONLY_TOKEN": ""}
    with dashboard_process(harness, env=unset) as (process, url):
        token_line = process.wait_for_line("log in with this token: ")
        token = token_line.rsplit(": ", 1)[1].strip()
        assert len(token) >= 24
        assert "127.0.0.1" in process.wait_for_line("celeriac dashboard on")
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            assert response.read() == b"ok"
            assert response.headers["x-frame-options"] == "DENY"
        request = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert b"celery_worker_up" in response.read()
        process.send(signal.SIGTERM)
        assert process.wait_exit(15) == 0
        assert "Traceback" not in process.stderr()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "0"], "Invalid value for '--port'"),
        (["--retention-days", "0"], "Invalid value for '--retention-days'"),
        (["--nope"], "No such option"),
    ],
)
def test_a_mistake_prints_the_usage(harness: Harness, args: list[str], says: str) -> None:
    done = harness.run_cli("-A", "apps.sqlite_tasks", "dashboard", *args)
    assert done.returncode == 2
    assert "Usage:" in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_password_hash_fails_at_start_naming_the_variable(harness: Harness) -> None:
    done = harness.run_cli(
        "-A",
        "apps.sqlite_tasks",
        "dashboard",
        env={"CELERIAC_DASHBOARD_PASSWORD_HASH": "not-a-hash"},
    )
    assert done.returncode == 1
    assert "CELERIAC_DASHBOARD_PASSWORD_HASH" in done.stderr
    assert "Traceback" not in done.stderr


def test_hash_password_prints_a_hash_the_dashboard_accepts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "dashboard", "--hash-password"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    encoded = done.stdout.strip()
    assert encoded.startswith("scrypt$")
    assert verify_password("a long enough password", encoded)
