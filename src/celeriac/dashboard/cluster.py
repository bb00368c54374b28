"""What events do not say, polled: each worker's pool, concurrency and queues (``inspect
stats`` and ``active_queues``), and each queue's depth and oldest message's age.

Workers and their heartbeats come from events (:mod:`.ingest`); the details that never change
while a worker runs come from remote control, asked of the live workers only (with them as the
destination, so the call returns as soon as they all answered), again whenever a new worker
shows up, and every few polls otherwise. Queue depths come from ``Transport.size``; the oldest
message's age from ``Transport.oldest_message_age(queue)``: seconds the longest-waiting ready
message has waited, ``0.0`` when none is ready, ``None`` when the broker cannot tell (the
contract's default; the page then says so, and no age series is exported).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac.dashboard.metrics import Metrics
from celeriac.dashboard.redact import Redactor
from celeriac.transports.base import Transport

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac

logger = logging.getLogger("celeriac.dashboard")

#: Polls between two refreshes of worker details that did not change.
DETAILS_EVERY = 6


@dataclass
class WorkerDetails:
    """What remote control says of one worker."""

    pool: str = "?"
    concurrency: int | None = None
    queues: list[str] = field(default_factory=list)
    pid: int | None = None
    updated: float = 0.0


@dataclass
class QueueInfo:
    name: str
    depth: int | None = None
    oldest_age: float | None = None
    consumers: int = 0
    error: str | None = None
    updated: float = 0.0


def pool_name(implementation: Any) -> str:
    """``prefork`` from ``celeriac.worker.pools.prefork:PreforkPool`` (Celery's
    ``celery.concurrency.prefork:TaskPool`` too)."""
    text = str(implementation or "?")
    module = text.split(":", 1)[0]
    return module.rsplit(".", 1)[-1] or text


class Cluster:
    """Polled details of workers and queues, for the pages and the metrics."""

    def __init__(
        self,
        app: Celeriac,
        metrics: Metrics,
        extra_queues: Sequence[str] = (),
        redact: Redactor | None = None,
    ) -> None:
        self.app = app
        self.redact = redact or Redactor()
        self.metrics = metrics
        self.workers: dict[str, WorkerDetails] = {}
        self.queues: dict[str, QueueInfo] = {}
        self._extra = list(extra_queues)
        self._polls = 0
        self.oldest_age_supported: bool | None = None
        #: Why the last poll failed as a whole (the broker unreachable), None when it did not.
        self.poll_error: str | None = None

    def queue_names(self) -> list[str]:
        """The app's queues, those the workers consume, and the ones given with ``-Q``."""
        names: list[str] = []
        try:
            names += [q.name for q in self.app.queues()]
        except Exception as exc:  # a routing setting that fails: still show the others
            logger.debug("dashboard: the app's queues: %s", self.redact(str(exc)))
        for details in list(self.workers.values()):
            names += details.queues
        names += self._extra
        return list(dict.fromkeys(n for n in names if n))

    # -- polling ----------------------------------------------------------------------------
    async def poll(self, transport: Transport, alive: Sequence[str]) -> None:
        """One round: worker details when due, then every queue's depth and age."""
        self._polls += 1
        missing = [h for h in alive if h not in self.workers]
        if alive and (missing or self._polls % DETAILS_EVERY == 1):
            await self._poll_workers(list(alive))
        for gone in [h for h in self.workers if h not in alive]:
            del self.workers[gone]
        await self._poll_queues(transport)

    async def _poll_workers(self, alive: list[str]) -> None:
        inspect = self.app.control.inspect(destination=alive, timeout=2.0)
        try:
            stats = await asyncio.to_thread(inspect.stats) or {}
            queues = await asyncio.to_thread(inspect.active_queues) or {}
        except Exception as exc:
            logger.warning(
                "dashboard: could not ask the workers for details: %s", self.redact(str(exc))
            )
            return
        now = time.time()
        for hostname in alive:
            info = stats.get(hostname)
            if not isinstance(info, dict):
                continue
            pool = info.get("pool") if isinstance(info.get("pool"), dict) else {}
            assert isinstance(pool, dict)
            concurrency = pool.get("max-concurrency")
            names = [
                str(q.get("name"))
                for q in (queues.get(hostname) or [])
                if isinstance(q, dict) and q.get("name")
            ]
            self.workers[hostname] = WorkerDetails(
                pool=pool_name(pool.get("implementation")),
                concurrency=concurrency if isinstance(concurrency, int) else None,
                queues=names,
                pid=info.get("pid") if isinstance(info.get("pid"), int) else None,
                updated=now,
            )

    async def _poll_queues(self, transport: Transport) -> None:
        consumers: dict[str, int] = {}
        for details in list(self.workers.values()):
            for name in details.queues:
                consumers[name] = consumers.get(name, 0) + 1
        now = time.time()
        for name in self.queue_names():
            info = self.queues.get(name) or QueueInfo(name)
            info.consumers = consumers.get(name, 0)
            try:
                info.depth = await transport.size(name)
                info.oldest_age = await transport.oldest_message_age(name)
                info.error = None
            except Exception as exc:
                info.error = self.redact(str(exc)) or type(exc).__name__
            info.updated = now
            self.queues[name] = info
            self.metrics.queue(name, info.depth, info.oldest_age, info.consumers)
        # the broker tells ages when any queue got one (None from every queue: it cannot)
        self.oldest_age_supported = any(q.oldest_age is not None for q in self.queues.values())
