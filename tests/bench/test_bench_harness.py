"""The side-by-side benchmark's harness (bench/run.py) works end to end, at ``--quick`` sizes.

Speed is never asserted here: only that every workload produced a figure from real processes,
that the outputs are written, that a system that cannot run becomes a failure row instead of a
crash, and that no process the benchmark started outlives it. celeriac runs from this venv (no
bench venv to build); one cheap peer (Huey) runs only if ``make bench`` already built its venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"
DB = 13  # not one of the full benchmark's (2-11) nor another suite's
REDIS_MARK = f"BENCH_REDIS_URL=redis://127.0.0.1:6379/{DB}".encode()
WORKLOAD_METRICS = (
    "enqueue_per_s", "bulk_per_s", "drain_per_s", "drain_steady_per_s", "roundtrip_p50_ms",
    "roundtrip_p99_ms", "io_per_s", "idle_cpu_pct", "rss_mb",
    # CPU per task, read from /proc, Redis INFO and the adapter's own process time
    "enqueue_producer_us", "enqueue_broker_us", "bulk_producer_us", "drain_worker_us",
    "drain_broker_us", "roundtrip_worker_us", "roundtrip_broker_us", "roundtrip_producer_us",
    "io_worker_us",
)  # fmt: skip

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def has_redis_transport() -> bool:
    try:
        import celeriac.transports.redis  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name == "celeriac.transports.redis":
            return False
        raise
    return True


def leftovers() -> list[int]:
    """Processes still carrying this test's Redis db in their environment."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if REDIS_MARK in environ.split(b"\0"):
                found.append(int(entry))
    return found


def lasting_leftovers(grace: float = 5.0) -> list[int]:
    """No process of the run is left once ``grace`` has passed: a process SIGKILLed by the
    harness a moment ago may still be tearing down (its environment still readable) on a
    loaded machine; one that is really left stays past it."""
    deadline = time.monotonic() + grace
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def run_bench(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--results-dir", str(out),
         "--python", f"celeriac={sys.executable}", "--db", f"celeriac={DB}", *args],
        capture_output=True, text=True, timeout=110, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return done, report


def assert_ran(report: dict[str, Any], name: str) -> None:
    entry = report["systems"][name]
    assert entry["status"] == "ok", entry
    summary = entry["summary"]
    missing = {k: summary[k].get("errors") for k in WORKLOAD_METRICS if summary[k]["runs"] < 1}
    assert not missing, missing
    drain = entry["runs"][0]["drain"]
    assert drain["n"] == drain["queued"], "the quick drain must finish, not stop at its cap"
    # every task costs its worker and the broker something: a zero would mean a meter read
    # the wrong process (or nothing) between its two samples
    for key in ("drain_worker_us", "drain_broker_us", "enqueue_producer_us"):
        assert summary[key]["median"] > 0, (key, summary[key])


def test_quick_run_measures_celeriac_and_cleans_up(tmp_path: Path) -> None:
    require_service("Redis", 6379)
    done, report = run_bench(tmp_path, "--only", "celeriac")
    assert lasting_leftovers() == []
    assert set(report["systems"]) == {"celeriac"}
    assert report["machine"]["nproc"] >= 1 and report["machine"]["redis"]
    assert list(tmp_path.glob("raw-*.json")), "the timestamped raw file is written too"
    table = (tmp_path / "latest.md").read_text()
    assert "| celeriac |" in table
    assert "CPU per task, in microseconds" in table and "drain, worker (us)" in table
    if not has_redis_transport():
        # The harness must turn this into a failure row, not a crash; nothing to measure yet.
        entry = report["systems"]["celeriac"]
        assert entry["status"] == "failed" and "no redis transport" in entry["reason"]
        pytest.skip("celeriac has no Redis transport yet: its row is a failure row")
    assert_ran(report, "celeriac")
    assert "celeriac:" in done.stdout


def test_quick_run_with_one_peer(tmp_path: Path) -> None:
    require_service("Redis", 6379)
    huey = ROOT / "bench" / ".venvs" / "huey" / "bin" / "python"
    if not huey.exists():
        pytest.skip("Huey's bench venv is not built yet (make bench or make bench-quick builds it)")
    done, report = run_bench(
        tmp_path, "--only", "celeriac,huey", "--python", f"huey={huey}", "--db", f"huey={DB}",
        "--repeats", "2",
    )  # fmt: skip
    assert lasting_leftovers() == []
    assert_ran(report, "huey")
    if has_redis_transport():
        assert_ran(report, "celeriac")
        # interleaved: a machine's drift over minutes is spread over both systems
        runs = [line.split(" (")[0] for line in done.stdout.splitlines() if ": run " in line]
        order = [line.split(":")[0] + line.split(": run ")[1][:1] for line in runs]
        assert order == ["celeriac1", "huey1", "celeriac2", "huey2"], done.stdout


def test_unknown_system_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(RUN), "--only", "celeriac,nosuch"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown system(s) nosuch" in done.stderr
