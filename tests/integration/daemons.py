"""Detached workers for integration tests: found by their pid files, always stopped.

A detached worker is not a child of the test (it was double-forked), so :class:`Daemons`
remembers the pid files a test's workers write and :meth:`Daemons.stop_all` ends every process
they still name (SIGTERM, then SIGKILL as a last resort), whatever the test did. Waiting for a
process that is not our child to exit uses a pidfd, which the kernel makes readable when it
exits: an event, not a polling loop (this suite runs on Linux).
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

from celeriac.utils.daemon import Pidfile, process_alive

STOP_TIMEOUT = 15.0
KILL_TIMEOUT = 5.0


def wait_gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` exited within ``timeout`` seconds (a zombie counts as gone)."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        while process_alive(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            select.select([fd], [], [], remaining)
        return True
    finally:
        os.close(fd)


class Daemons:
    """The pid files of the detached workers one test started."""

    def __init__(self) -> None:
        self.pidfiles: list[Path] = []

    def track(self, *paths: Path) -> None:
        self.pidfiles.extend(paths)

    def pid(self, path: Path) -> int:
        """The pid a tracked worker wrote (it writes the file before it is ready)."""
        pid = Pidfile(path).read_pid()
        assert pid is not None, f"no pid in {path}"
        return pid

    def stop_all(self) -> None:
        pids = [p for p in (Pidfile(path).read_pid() for path in self.pidfiles) if p]
        live = [pid for pid in pids if process_alive(pid)]
        for pid in live:
            os.kill(pid, signal.SIGTERM)
        for pid in live:
            if not wait_gone(pid, STOP_TIMEOUT):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, KILL_TIMEOUT)
