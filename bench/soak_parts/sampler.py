"""One sample a second: the worker's memory, Redis' memory and the run's progress.

The worker's memory is read from /proc for its whole process tree (the main process and every
prefork child), as ``make bench`` reads it, so no psutil is needed in celeriac's venv: RSS summed
over the processes (shared pages counted once per process, the figure ``ps`` users compare) and
PSS (shared pages split between the processes that share them, so the sum is what the tree
really holds). Redis' side is ``INFO memory`` ``used_memory`` (the whole server: other databases
and clients count too, hence the run's own key count beside it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from harness import procs

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """What one tick saw; memory in MiB."""

    t: float  # seconds since the worker started
    done: int  # tasks counted done by the worker
    sent: int  # tasks published so far
    processes: int  # processes in the worker's tree
    rss_mib: float  # summed over the tree
    pss_mib: float  # summed over the tree
    main_rss_mib: float  # the main process alone
    redis_used_mib: float  # INFO memory used_memory
    redis_rss_mib: float  # INFO memory used_memory_rss
    db_keys: int  # keys in the run's database (DBSIZE)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (``/proc/<pid>/smaps_rollup``), 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def one_rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * procs.PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class Sampler:
    """Samples on a thread of its own every ``interval`` seconds until :meth:`stop`.

    ``sent`` is read from a callable (the producer's count); ``done`` from the counter key. Each
    tick is timed from a fixed start, so a slow tick does not shift the ones after it.
    """

    def __init__(
        self,
        pid: int,
        client: redis.Redis,
        counter: str,
        sent: Any,
        interval: float = 1.0,
    ) -> None:
        self.pid = pid
        self.client = client
        self.counter = counter
        self.sent = sent
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def take(self) -> Sample:
        tree = procs.descendants(self.pid)
        rss = sum(one_rss(pid) for pid in tree)
        pss = sum(pss_bytes(pid) for pid in tree)
        memory = self.client.info("memory")
        return Sample(
            t=round(time.monotonic() - self._started, 3),
            done=int(self.client.get(self.counter) or 0),
            sent=int(self.sent()),
            processes=len(tree),
            rss_mib=round(rss / MIB, 3),
            pss_mib=round(pss / MIB, 3),
            main_rss_mib=round(one_rss(self.pid) / MIB, 3),
            redis_used_mib=round(int(memory["used_memory"]) / MIB, 3),
            redis_rss_mib=round(int(memory["used_memory_rss"]) / MIB, 3),
            db_keys=int(self.client.dbsize()),
        )

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            self.samples.append(self.take())
            tick += 1
            self._stop.wait(max(0.0, self._started + tick * self.interval - time.monotonic()))
