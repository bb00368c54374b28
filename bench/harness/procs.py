"""Processes the benchmark starts, and what they cost, read from /proc.

Every worker and adapter runs in a session (and so a process group) of its own, so one
``killpg`` reaches its children too, even when the leader is gone; :func:`stop` always ends with
SIGKILL to the group and to any descendant still seen. The metrics read /proc directly (no
psutil) so that the driver runs in any venv that has redis-py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
RESULT_MARK = "BENCH-RESULT "

_live: dict[int, subprocess.Popen[bytes]] = {}
"""Started and not yet stopped; :func:`stop_all` is the driver's last resort on exit."""


class AdapterError(RuntimeError):
    """An adapter failed, timed out, or printed no result line."""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, found by walking parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """CPU time of the tree: user+system of each process plus what its reaped children used.

    In clock ticks (10 ms): over a 10 s idle window a resolution of 0.1% of a core. Per-thread
    schedstat would give nanoseconds, but it loses the time of threads that exit in the window
    (a thread pool shrinking while idle made the figure negative), and ticks never do.
    """
    ticks = 0
    for member in descendants(pid):
        fields = _stat_fields(member)
        if fields is not None:
            # after dropping pid and comm: utime, stime, cutime, cstime are fields 11-14
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of the tree, each process counted whole (shared pages more than once)."""
    total = 0
    for member in descendants(pid):
        try:
            resident = int(Path(f"/proc/{member}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += resident * PAGE_SIZE
    return total


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """Percent of one core that the tree used over ``seconds`` of wall time."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def start(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """Start a worker in a new session, its output to ``log``."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _live[proc.pid] = proc
    return proc


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the group (a warm shutdown for every system here), then SIGKILL whatever is left."""
    seen = descendants(proc.pid) if proc.poll() is None else []
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _kill_group(proc.pid, signal.SIGKILL)
    for pid in seen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _live.pop(proc.pid, None)


def stop_all() -> None:
    for proc in list(_live.values()):
        stop(proc, grace=2.0)


@contextlib.contextmanager
def running(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker for the duration of a ``with`` block, stopped in ``finally`` whatever happens."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = start(argv, env, cwd, log)
        try:
            yield proc
        finally:
            stop(proc)


def run_adapter(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, timeout: float
) -> dict[str, Any]:
    """Run one adapter command to completion (or its group is killed) and return its result."""
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _live[proc.pid] = proc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AdapterError(f"timed out after {timeout:.0f}s") from None
    finally:
        stop(proc, grace=1.0)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            if not result.pop("ok", False):
                raise AdapterError(str(result.get("error", "failed")))
            return result
    tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
    raise AdapterError(f"exit {proc.returncode}, no result line; stderr: {tail or '(empty)'}")


def log_tail(path: Path, lines: int = 4) -> str:
    """The last lines of a worker's log, for a failure message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip()[:200] for line in text[-lines:])
