"""``--autoscale MAX,MIN``: grow the pool with the backlog, shrink it when idle.

The decision is a pure function of a few numbers (:class:`ScaleStats`) so that it is easy to
test and to replace: subclass :class:`Autoscaler`, override :meth:`Autoscaler.target`, and
point the ``worker_autoscaler`` setting at ``"module:Class"`` to scale on another metric (free
memory, the time of day, a queue's age).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celeriac.errors import ImproperlyConfigured
from celeriac.utils.plugins import load_class
from celeriac.worker.components import Component

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker")


@dataclass(frozen=True, slots=True)
class ScaleStats:
    """What the autoscaler sees at each tick."""

    current: int  # pool size now
    busy: int  # tasks running now
    waiting: int  # fetched by this worker, waiting for a free slot
    queued: int  # messages waiting in the broker's queues of this worker
    idle_for: float  # seconds since the pool last had every slot busy or a backlog
    minimum: int
    maximum: int


class Autoscaler:
    """The default policy: grow at once to cover the backlog, shrink to what is busy after
    ``keepalive`` seconds without backlog. Always within ``[minimum, maximum]``."""

    interval: float = 1.0
    keepalive: float = 30.0

    def target(self, stats: ScaleStats) -> int:
        backlog = stats.waiting + stats.queued
        if backlog > 0:
            wanted = stats.busy + backlog
        elif stats.idle_for >= self.keepalive:
            wanted = stats.busy
        else:
            wanted = stats.current
        return max(stats.minimum, min(stats.maximum, wanted))


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MAX,MIN"`` (Celery's order) or ``"MAX"`` into ``(max, min)``; checks both."""
    parts = [p.strip() for p in text.split(",")]
    try:
        maximum = int(parts[0])
        minimum = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    except (ValueError, IndexError):
        raise ImproperlyConfigured(f"--autoscale takes MAX,MIN (e.g. 10,2), not {text!r}") from None
    if len(parts) > 2 or maximum < 1 or minimum < 0 or minimum > maximum:
        raise ImproperlyConfigured(f"--autoscale takes MAX,MIN with MAX >= MIN >= 0: {text!r}")
    return maximum, max(1, minimum)


class AutoscalerStep(Component):
    name = "autoscaler"
    requires = ("timer", "pool", "consumer")

    def __init__(self) -> None:
        self.scaler: Autoscaler = Autoscaler()
        self._busy_at = time.monotonic()

    def enabled(self, worker: Worker) -> bool:
        return worker.autoscale is not None

    async def start(self, worker: Worker) -> None:
        path = worker.app.conf.worker_autoscaler
        if path:
            cls = load_class(path, "setting 'worker_autoscaler'")
            if not issubclass(cls, Autoscaler):
                raise ImproperlyConfigured(f"worker_autoscaler {path!r} is not an Autoscaler")
            self.scaler = cls()
        worker.timer.every(self.scaler.interval, lambda: self.tick(worker), "autoscaler")

    async def stats(self, worker: Worker) -> ScaleStats:
        assert worker.autoscale is not None
        assert worker.consumer is not None and worker.pool is not None
        assert worker.transport is not None
        consumer, pool = worker.consumer, worker.pool
        queued = 0
        for queue in worker.queues:
            queued += await worker.transport.size(queue.name)
        pool.sync()  # what children run on their own, in the state now
        busy = len(worker.state.active)
        # waiting for a slot, or handed to the pool but not started by a thread or child yet
        waiting = len(consumer.waiting) + max(0, consumer.slots.in_use - busy)
        now = time.monotonic()
        if waiting or queued or busy >= pool.concurrency:
            self._busy_at = now
        maximum, minimum = worker.autoscale
        return ScaleStats(
            pool.concurrency, busy, waiting, queued, now - self._busy_at, minimum, maximum
        )

    async def tick(self, worker: Worker) -> None:
        stats = await self.stats(worker)
        target = self.scaler.target(stats)
        if target != stats.current and worker.pool is not None and worker.consumer is not None:
            logger.info(
                "autoscale: %d -> %d (busy %d, waiting %d, queued %d)",
                stats.current,
                target,
                stats.busy,
                stats.waiting,
                stats.queued,
            )
            await worker.pool.resize(target)
            await worker.consumer.resize(target)
