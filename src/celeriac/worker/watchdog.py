"""The fetch watchdog: a worker that cannot fetch while its queues hold work says so, and
starts its fetch over.

Why: a fetch can wait on a link that is dead without anyone being told - a half-open TCP
connection (a NAT or firewall that forgot it, a peer that vanished) answers nothing and closes
nothing, so a blocking ``get`` or the command after it waits for its socket timeout, or for ever
where there is none. Meanwhile the queue fills and the worker looks healthy: it is up, it holds
nothing, it logs nothing. The broker outage logger only speaks when an operation *fails*.

What it watches, every ``threshold / 4`` seconds (never more often than every half second):

* no delivery arrived and no task finished since the last look;
* the pool is not busy (fewer tasks run than it has slots: a pool busy with long tasks is not
  stalled, it is working) and the consumer is not stopping;
* at least one of its queues holds a message that is ready now: the transport's
  ``oldest_message_age`` (brokers that cannot tell: ``size``); a probe that gets no answer
  within half the threshold counts too, since the link it would use is what is suspect.

That covers both ways a worker stops fetching on a dead link: its ``get`` waits on it, or its
prefetch window is full of finished ``acks_late`` deliveries whose acks wait on it (the
consumer fetches only when there is room). When all three have held for ``threshold``
seconds, one WARNING names the queues, what they hold, how long nothing was fetched and what
the worker holds, and the consumer's fetch is started over (:meth:`Consumer.refetch`, when a
``get`` is waiting): the transport contract makes an interrupted ``get`` safe (what it took
goes back), and the next ``get`` takes a fresh connection if the old one is stuck. Each further
``threshold`` without progress repeats that; the first progress afterwards logs that the
worker fetches again.

The threshold is the setting ``worker_fetch_stall_timeout`` (``0`` turns the watchdog off;
``None``, the default, is :data:`DEFAULT_THRESHOLD`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celeriac.errors import TransportError
from celeriac.worker.components import Component

if TYPE_CHECKING:
    from celeriac.transports.base import Transport
    from celeriac.worker.consumer import Consumer
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker")

#: Seconds without a fetch, while work waits and the worker has room, before it says so.
DEFAULT_THRESHOLD = 10.0
_MIN_INTERVAL = 0.5


@dataclass(frozen=True)
class Backlog:
    """What the worker's queues hold, as far as the broker answered."""

    #: queue -> what waits in it: how long its oldest ready message has waited or, for a
    #: broker that cannot tell ages, how many messages wait (``size``).
    waiting: dict[str, str]
    #: The queues asked about when the broker did not answer in time (the link is suspect).
    unanswered: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.waiting) or bool(self.unanswered)

    def describe(self) -> str:
        if self.waiting:
            return ", ".join(f"{q} ({what})" for q, what in self.waiting.items())
        return f"{', '.join(self.unanswered)} (the broker did not answer how many)"


async def probe_backlog(transport: Transport, queues: Sequence[str], timeout: float) -> Backlog:
    """The queues among ``queues`` that hold a message ready now (see :class:`Backlog`)."""

    async def probe() -> dict[str, str]:
        waiting: dict[str, str] = {}
        for queue in queues:
            age = await transport.oldest_message_age(queue)
            if age is None:
                depth = await transport.size(queue)
                if depth > 0:
                    waiting[queue] = f"{depth} waiting"
            elif age > 0:
                waiting[queue] = f"oldest ready for {age:.1f}s"
        return waiting

    try:
        return Backlog(await asyncio.wait_for(probe(), timeout))
    except TimeoutError:
        return Backlog({}, unanswered=tuple(queues))
    except TransportError:
        return Backlog({})  # a broker that is down: the outage logger already says so
    except Exception as exc:  # a queue the broker cannot measure: no stall is claimed
        logger.debug("fetch watchdog: cannot measure %s: %r", ", ".join(queues), exc)
        return Backlog({})


class FetchWatchdog:
    """Watches one consumer (see the module). :meth:`check` is called periodically."""

    def __init__(
        self,
        consumer: Consumer,
        threshold: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.threshold = threshold
        self.clock = clock
        #: When the current stall was first seen (None: the worker is fetching).
        self.stalled_since: float | None = None
        #: When the watchdog last started the fetch over during this stall.
        self._acted_at: float | None = None
        #: How many times the fetch was started over (for ``inspect`` and tests).
        self.restarts = 0
        self._seen = self._progress_mark()

    @property
    def interval(self) -> float:
        return max(_MIN_INTERVAL, self.threshold / 4)

    def _progress_mark(self) -> tuple[int, frozenset[int]]:
        """What changes when the worker makes progress: tasks finished, deliveries held."""
        return self.consumer.state.processed, frozenset(self.consumer.inflight)

    def _progressed(self) -> bool:
        mark = self._progress_mark()
        previous, self._seen = self._seen, mark
        return mark[0] != previous[0] or not mark[1] <= previous[1]

    def _idle(self) -> bool:
        """Whether the worker should be fetching: not stopping, and its pool not busy."""
        consumer = self.consumer
        if consumer.stopping:
            return False
        return len(consumer.state.active) < consumer.pool.concurrency

    def _holding(self) -> str:
        consumer = self.consumer
        held, running = len(consumer.inflight), len(consumer.state.active)
        return f"holding {held} deliveries, {running} running"

    async def check(self) -> None:
        now = self.clock()
        if self._progressed() or not self._idle():
            self._recovered(now)
            return
        backlog = await probe_backlog(
            self.consumer.transport, list(self.consumer.queue_names), self.threshold / 2
        )
        if not backlog:
            self._recovered(now)
            return
        if self.stalled_since is None:
            self.stalled_since = now
        since = self._acted_at if self._acted_at is not None else self.stalled_since
        if now - since < self.threshold:
            return
        self._acted_at = now
        self.restarts += 1
        logger.warning(
            "nothing fetched for %.0fs while %s wait (%s); restarting the fetch (%d so far)",
            now - self.stalled_since,
            backlog.describe(),
            self._holding(),
            self.restarts,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.consumer.refetch(), self.threshold)

    def _recovered(self, now: float) -> None:
        if self.stalled_since is not None and self._acted_at is not None:
            logger.warning("fetching again after %.0fs without a fetch", now - self.stalled_since)
        self.stalled_since = self._acted_at = None


def stall_threshold(worker: Worker) -> float:
    """The watchdog's threshold: the setting when the app has it, else the default."""
    value = worker.app.conf.worker_fetch_stall_timeout
    return DEFAULT_THRESHOLD if value is None else float(value)


class WatchdogStep(Component):
    """Runs the fetch watchdog on the worker's timer (off with a threshold of 0)."""

    name = "watchdog"
    requires = ("timer", "consumer")

    def __init__(self) -> None:
        self.watchdog: FetchWatchdog | None = None

    def enabled(self, worker: Worker) -> bool:
        return stall_threshold(worker) > 0

    async def start(self, worker: Worker) -> None:
        assert worker.consumer is not None
        watchdog = self.watchdog = FetchWatchdog(worker.consumer, stall_threshold(worker))
        worker.timer.every(watchdog.interval, watchdog.check, "fetch-watchdog")

    async def stop(self, worker: Worker) -> None:
        """The timer stops the checks; nothing else is held."""
