"""``bench/capacity.py`` (``make bench-capacity``) measures what it says, end to end, briefly.

Speed is never asserted: only that a short window on each broker counts tasks that real
producers sent and real workers ran, that every CPU figure was read (none is zero: each meter
read a process that worked), and that the run leaves no process, key or queue behind.
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
import redis

from conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
CAPACITY = ROOT / "bench" / "capacity.py"
METER = "redis://127.0.0.1:6379/12"

pytestmark = [pytest.mark.slow]


def run_capacity(out: Path, broker: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CAPACITY), "--brokers", broker, "--steps", "1", "--warmup", "1",
         "--seconds", "1.5", "--results-dir", str(out), "--out", "cap"],
        capture_output=True, text=True, timeout=100, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report: dict[str, Any] = json.loads((out / "cap.json").read_text())
    assert "A million tasks a minute" in (out / "cap.md").read_text()
    return report


def leftovers() -> list[str]:
    """Processes of a capacity run still alive (their environment names its queue), each with
    its command line."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"CAPACITY_QUEUE=capacity-" in environ and cmdline:  # a zombie has no cmdline
                found.append(entry + ": " + cmdline.replace(b"\0", b" ").decode())
    return found


def gone_soon(limit: float = 15.0) -> list[str]:
    """The run's processes still alive ``limit`` seconds after it ended (a loaded machine can
    take a moment to finish a killed process), each with its state and kernel wait channel."""
    deadline = time.monotonic() + limit
    while (found := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.1)
    described = []
    for line in found:
        pid = line.split(":", 1)[0]
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            state = next(s for s in status.splitlines() if s.startswith("State:"))
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except (OSError, StopIteration):
            state, wchan = "gone", ""
        described.append(f"{line} [{state}; wchan {wchan}]")
    return described


@pytest.mark.redis
@pytest.mark.amqp
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_short_capacity_window_counts_tasks_and_every_cpu(tmp_path: Path, broker: str) -> None:
    require_service("Redis", 6379)
    if broker == "amqp":
        require_service("RabbitMQ", 5672)
    report = run_capacity(tmp_path, broker)
    (step,) = report["steps"]
    assert step["broker"] == broker and step["k"] == 1
    assert step["done"] > 0 and step["per_s"] > 0
    for key in ("broker_us", "worker_us", "producer_us", "machine_busy_cores"):
        assert step[key] > 0, (key, step)
    assert gone_soon() == []
    meter = redis.Redis.from_url(METER)
    assert list(meter.scan_iter(f"capacity-{broker}-*", count=1000)) == []
