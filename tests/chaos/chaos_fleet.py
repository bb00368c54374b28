"""The workers of a chaos run: started, killed, frozen and started again, every fault written down.

Each :class:`Slot` is one worker that the run keeps alive: ``kill -9`` of its parent is followed
by a new worker in the same slot (as a supervisor would), ``kill -9`` of a prefork child is left
to the worker to replace. Every process a fault hits is appended to the run's ``faults`` file
(:mod:`chaos_ledger` excuses the duplicates it explains). :meth:`Fleet.close` stops every worker and
kills whatever a killed parent left behind, so no process outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worker_harness import READY_TIMEOUT, WorkerProcess, pool_children

CHAOS_DIR = Path(__file__).resolve().parent
#: A line each worker prints when its fetch watchdog speaks (src/celeriac/worker/watchdog.py).
STALL_LINE = "nothing fetched for"
#: How long a killed worker's orphaned prefork children may run on.
ORPHAN_LIFETIME = 10.0
#: Starts of one slot's worker that may fail in a row (a fault hitting each start).
MAX_STARTS = 5


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Slot:
    """One worker the run keeps: its name, pool, and the processes it had."""

    name: str
    pool: str
    concurrency: int
    current: WorkerProcess | None = None
    past: list[WorkerProcess] = field(default_factory=list)


class Fleet:
    def __init__(self, directory: Path, env: dict[str, str], queue: str, slots: list[Slot]) -> None:
        self.dir = directory
        self.env = {**env, "PYTHONPATH": f"{CHAOS_DIR}{os.pathsep}{env.get('PYTHONPATH', '')}"}
        self.queue = queue
        self.slots = slots
        self.orphans: set[int] = set()
        #: The last line of each worker that exited while starting.
        self.startup_failures: list[list[str]] = []
        self.faults_file = directory / "faults"

    def private_queue(self, slot: Slot) -> str:
        """The queue only this slot's worker consumes (to prove it still fetches)."""
        return f"{self.queue}-{slot.name}"

    # -- workers ----------------------------------------------------------------------------------
    def start(self, slot: Slot, wait: bool = True) -> WorkerProcess:
        args = [sys.executable, "-m", "celeriac", "-A", "chaos_app", "worker"]
        args += ["-P", slot.pool, "-c", str(slot.concurrency), "-l", "info"]
        args += ["-n", f"{slot.name}@chaos", "-Q", f"{self.queue},{self.private_queue(slot)}"]
        worker = WorkerProcess(args, self.env, self.dir)
        if slot.current is not None:
            slot.past.append(slot.current)
        slot.current = worker
        if wait:
            self.ready(slot)
        return worker

    def ready(self, slot: Slot) -> WorkerProcess:
        """The slot's worker, once it consumes (at once if it already printed so). A worker
        that exits while starting (a fault hit its start) is started again, as a supervisor
        would, and counted in :attr:`startup_failures`."""
        for _ in range(MAX_STARTS):
            worker = slot.current
            assert worker is not None
            try:
                worker.wait_ready(READY_TIMEOUT * 2)  # the machine is loaded by the faults
                return worker
            except AssertionError:
                if worker.running:
                    raise
                self.startup_failures.append(worker.stderr().splitlines()[-1:])
                self.start(slot, wait=False)
        raise AssertionError(f"{slot.name}: {MAX_STARTS} starts failed\n{self.outputs()}")

    def start_all(self) -> None:
        """Start every slot's worker; they start side by side, then each is waited for."""
        for slot in self.slots:
            self.start(slot, wait=False)
        for slot in self.slots:
            self.ready(slot)

    def workers(self) -> list[WorkerProcess]:
        return [w for s in self.slots for w in [*s.past, *([s.current] if s.current else [])]]

    def outputs(self) -> str:
        return "\n".join(w.output()[-4000:] for w in self.workers())

    def stall_warnings(self) -> int:
        return sum(w.stderr().count(STALL_LINE) for w in self.workers())

    def note(self, fault: str, pids: list[int], began: float, ended: float) -> None:
        """``hit <fault> <from> <until> <pid>...``: wall-clock times, as the tasks record."""
        with self.faults_file.open("a") as fh:
            fh.write(" ".join(["hit", fault, f"{began:.3f}", f"{ended:.3f}", *map(str, pids)]))
            fh.write("\n")

    # -- faults -------------------------------------------------------------------------------
    def kill_parent(self, slot: Slot) -> None:
        """``kill -9`` the worker (its children die or are orphaned); start a new one, without
        waiting for it (the other worker carries the load meanwhile)."""
        worker = self.ready(slot)
        kids = pool_children(worker.pid)
        now = time.time()
        # its children run on, orphaned, until they notice (a task already in a child's pipe
        # may even start): they count as hit for a while after the kill
        self.note("kill-parent", [worker.pid], now, now)
        self.note("kill-parent", kids, now, now + ORPHAN_LIFETIME)
        worker.send(signal.SIGKILL)
        worker.wait_exit(10)
        self.orphans.update(kids)
        self.start(slot, wait=False)

    def kill_child(self, slot: Slot) -> bool:
        """``kill -9`` one prefork child of the slot's worker; False if it has none."""
        worker = self.ready(slot)
        kids = pool_children(worker.pid)
        if not kids:
            return False
        victim = kids[0]
        now = time.time()
        self.note("kill-child", [victim], now, now)
        os.kill(victim, signal.SIGKILL)
        return True

    def freeze(self, slot: Slot, seconds: float, wait: Callable[[float], None]) -> None:
        """SIGSTOP the worker (and its children) for ``seconds``, past its lease; SIGCONT."""
        worker = self.ready(slot)
        pids = [worker.pid, *pool_children(worker.pid)]
        began = time.time()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            wait(seconds)
        finally:
            for pid in pids:
                if alive(pid):
                    os.kill(pid, signal.SIGCONT)
            self.note("freeze", pids, began, time.time())

    def close(self) -> None:
        for worker in self.workers():
            worker.send(signal.SIGTERM)
        for worker in self.workers():
            worker.stop()
        for pid in self.orphans:  # children a killed parent left behind (mostly gone by now)
            with contextlib.suppress(OSError):  # gone; the pid checked first: never another's
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
