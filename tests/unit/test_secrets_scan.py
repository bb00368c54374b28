"""The secrets scan (tests/_secrets_scan.py) has teeth: a registered secret written to a log
record, or printed by a worker process, fails the run and is reported by test, source and a
redacted line, never shown itself; in a run under xdist too, where the workers' finds reach the
controller. The inner runs are real ``pytest`` processes loading the plugin, as the suite does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from _secrets_scan import MARK, Find, register_secret, scan

TESTS = Path(__file__).resolve().parents[1]

USER_TESTS = """
import logging
import os
import sys

from _secrets_scan import register_secret
from celeriac.testing import WorkerProcess

SECRET = os.environ["LEAKED_SECRET"]
register_secret(SECRET, "the inner run's password")


def test_logs_it() -> None:
    logging.getLogger("inner.app").warning("connecting to redis://:%s@127.0.0.1/0", SECRET)


def test_a_process_prints_it() -> None:
    code = "import os; print('worker config: password=' + os.environ['LEAKED_SECRET'])"
    process = WorkerProcess([sys.executable, "-c", code], os.environ, os.getcwd())
    process.wait_for("worker config", timeout=20)
    process.proc.wait(20)
    process.stop()


def test_clean() -> None:
    logging.getLogger("inner.app").warning("connecting to redis://:***@127.0.0.1/0")
"""


def run_inner(tmp_path: Path, secret: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["LEAKED_SECRET"] = secret
    argv = [sys.executable, "-m", "pytest", "-p", "_secrets_scan", "-p", "no:cacheprovider", "-q"]
    return subprocess.run(
        [*argv, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
    )


@pytest.mark.parametrize("extra", [(), ("-n", "1")], ids=["one-process", "xdist"])
def test_a_secret_in_a_log_line_fails_the_run(tmp_path: Path, extra: tuple[str, ...]) -> None:
    secret = f"leaky-{uuid.uuid4().hex}"
    done = run_inner(tmp_path, secret, *extra)
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "3 passed" in out  # every test passed: the scan alone fails the run
    assert "2 log line(s) written during the run hold a registered secret" in out
    assert secret not in out  # reported redacted
    assert "in test_user.py::test_logs_it [log inner.app WARNING]" in out
    assert "connecting to redis://:<secret: the inner run's password>@127.0.0.1/0" in out
    assert "in test_user.py::test_a_process_prints_it [worker process " in out
    assert "worker config: password=<secret: the inner run's password>" in out
    assert "test_clean" not in out


def test_scan_names_the_test_and_redacts() -> None:
    known = {"hunter2-xyz": "a password", "PRIVATE KEY-----": "a PEM private key"}
    text = (
        f"{MARK}t.py::test_a[hunter2-xyz]\n"  # a test's id is not a log line
        "log app WARNING\tfine\n"
        "log app WARNING\turl redis://:hunter2-xyz@h/0\n"
        f"{MARK}t.py::test_b\n"
        "worker process 7\t-----BEGIN PRIVATE KEY-----\n"
    )
    finds, total = scan(text, known)
    assert total == 2
    assert finds == [
        Find("a password", "t.py::test_a[hunter2-xyz]", "log app WARNING", "url "
             "redis://:<secret: a password>@h/0"),
        Find("a PEM private key", "t.py::test_b", "worker process 7",
             "-----BEGIN <secret: a PEM private key>"),
    ]  # fmt: skip


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="would match everywhere"):
        register_secret("pw", "too short")
