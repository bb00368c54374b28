"""The machine a result came from: figures without it cannot be compared to anything."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import redis


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def python_version(python: Path | str) -> str:
    try:
        done = subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def describe(redis_url: str, python: Path | str) -> dict[str, Any]:
    """nproc, CPU model, memory, the Python the systems run on, and the Redis server's version."""
    info = redis.Redis.from_url(redis_url).info("server")
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "memory_gib": round(pages / 2**30, 1),
        "kernel": platform.release(),
        "python": python_version(python),
        "redis": str(info.get("redis_version", "unknown")),
    }
