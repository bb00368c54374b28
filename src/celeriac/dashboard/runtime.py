"""The dashboard's moving parts and their life: the history store, the metrics, the event pump
and the poller, on one background event loop of their own.

The web server's loop only serves pages; everything that talks to the broker runs on the
background loop (:meth:`Dashboard.run`), so a slow broker never stalls a page and a burst of
events never waits for a page to render. The pump reconnects on its own after a broker outage,
backing off up to 30 s, and asks every worker for a heartbeat once listening (as ``celery
events`` does) so that the worker list fills at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.dashboard.cluster import Cluster
from celeriac.dashboard.config import DashboardConfig
from celeriac.dashboard.ingest import Ingest
from celeriac.dashboard.metrics import Metrics
from celeriac.dashboard.redact import Redactor
from celeriac.dashboard.store import HistoryStore
from celeriac.events.receiver import EventReceiver
from celeriac.transports.base import Transport
from celeriac.utils.portal import Portal

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac

logger = logging.getLogger("celeriac.dashboard")
T = TypeVar("T")

#: Longest pause between two attempts to reach the broker.
MAX_BACKOFF = 30.0


class Dashboard:
    """Everything the pages read and act through (see the module docstring)."""

    def __init__(self, app: Celeriac, config: DashboardConfig) -> None:
        self.app = app
        self.config = config
        self.store = HistoryStore(config.db, max_age=config.max_age, max_tasks=config.max_tasks)
        self.metrics = Metrics()
        self.ingest = Ingest(
            self.store,
            self.metrics,
            queue_of=self._queue_of,
            max_tasks_in_memory=config.max_tasks_in_memory,
            forget_lost_after=config.forget_lost_after,
        )
        #: Masks passwords in error texts shown or logged (:mod:`.redact`).
        self.redact = Redactor.of_app(app)
        self.cluster = Cluster(app, self.metrics, config.queues, self.redact)
        self.portal = Portal("celeriac-dashboard")
        #: True while the event pump listens; the error of its last failure otherwise.
        self.listening = False
        self.last_error: str | None = None
        self.started_at = time.time()
        self._transport: Transport | None = None
        self._tasks: list[asyncio.Future[None]] = []
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` began: live streams end."""
        return self._stopping

    def _queue_of(self, name: str) -> str | None:
        route = self.app.router.route(name)
        return route.queue.name if route.queue is not None else route.routing_key

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the store and start the pump and the poller on the background loop."""
        self.store.open()
        loop = self.portal.loop
        self._tasks = [
            asyncio.run_coroutine_threadsafe(self._pump(), loop),  # type: ignore[list-item]
            asyncio.run_coroutine_threadsafe(self._poller(), loop),  # type: ignore[list-item]
        ]

    def stop(self) -> None:
        """Stop both loops, write what was folded, close every connection."""
        self._stopping = True

        async def cancel() -> None:
            running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=5)
            if self._transport is not None:
                transport, self._transport = self._transport, None
                try:
                    await asyncio.wait_for(transport.close(), 5)
                except Exception as exc:
                    logger.debug("dashboard: closing the broker connection: %s", self._text(exc))

        try:
            self.portal.call(cancel(), timeout=10)
        except Exception as exc:
            logger.debug("dashboard: stopping: %s", self._text(exc))
        self.portal.close()
        self.ingest.close()
        self.store.close()
        self.app.control.close()

    def _text(self, exc: BaseException) -> str:
        """An error's message as shown or logged: passwords masked."""
        return self.redact(str(exc))

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the background loop, from the web server's loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self.portal.loop)
        return await asyncio.wrap_future(future)

    async def transport(self) -> Transport:
        """The background loop's connected transport (for sizes, purges, dead letters)."""
        if self._transport is None:
            transport = self.app.create_transport()
            await transport.connect()
            self._transport = transport
        return self._transport

    # -- the event pump ---------------------------------------------------------------------
    def _receiver(self) -> EventReceiver:
        app = self.app

        async def wakeup() -> None:
            await asyncio.to_thread(app.control.heartbeat)

        return EventReceiver(
            app.create_transport(), exchange=app.conf.event_exchange, wakeup=wakeup, buffer=50_000
        )

    async def _pump(self) -> None:
        backoff = 1.0
        ingest = self.ingest
        while not self._stopping:
            receiver = self._receiver()
            try:
                async with receiver:
                    self.listening, self.last_error, backoff = True, None, 1.0
                    logger.info("dashboard: listening to events")
                    while True:
                        event = await receiver.next(ingest.flush_interval)
                        if event is not None:
                            ingest.fold(event)
                        if ingest.due():
                            await asyncio.to_thread(ingest.flush)
                            ingest.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.stopping:
                    # stop() gave up waiting for this pump and closed its loop: the error is
                    # the close's (a coroutine finalized later has no loop to sleep on)
                    return
                self.listening, self.last_error = False, f"{type(exc).__name__}: {self._text(exc)}"
                logger.warning("dashboard: events: %s; again in %.0f s", self._text(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    # -- the poller -------------------------------------------------------------------------
    async def _poller(self) -> None:
        while not self._stopping:
            try:
                alive = [w.hostname for w in self.ingest.state.alive_workers()]
                await self.cluster.poll(await self.transport(), alive)
                self.cluster.poll_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.cluster.poll_error = f"{type(exc).__name__}: {self._text(exc)}"
                logger.warning("dashboard: polling queues and workers: %s", self._text(exc))
                transport, self._transport = self._transport, None
                if transport is not None:
                    try:
                        await transport.close()
                    except Exception as close_exc:
                        logger.debug(
                            "dashboard: closing a failed transport: %s", self._text(close_exc)
                        )
            interval = self.config.poll_interval
            known = set(self.cluster.workers)
            if any(w.hostname not in known for w in self.ingest.state.alive_workers()):
                interval = min(interval, 0.5)  # a new worker: its details soon
            await asyncio.sleep(interval)
