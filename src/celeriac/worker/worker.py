"""The worker's life: connect, declare, start the pool and consumer, run, shut down.

Shutdown follows Celery's contract:

* first SIGTERM or SIGINT: **warm** - stop fetching, put back what was fetched but not started,
  let running tasks finish (up to ``worker_shutdown_timeout``), settle, exit 0;
* a second signal, or SIGQUIT: **cold** - put back every message not yet acked (running
  ``acks_late`` tasks included, so none is lost) and exit at once.

A broker that cannot be reached at start-up is retried ``broker_connection_max_retries`` times,
then the worker exits with status 1 and one clear line, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from celeriac.errors import CeleriacError
from celeriac.transports.base import Transport
from celeriac.utils.urls import redact_url
from celeriac.worker.consumer import FETCH_TIMEOUT, Consumer
from celeriac.worker.pools import pool_class
from celeriac.worker.pools.base import Pool, PoolOptions
from celeriac.worker.state import WorkerState

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger("celeriac.worker")

EXIT_OK = 0
EXIT_BROKER_UNREACHABLE = 1


class Worker:
    """One worker process. ``run()`` blocks until shutdown and returns the exit status."""

    def __init__(
        self,
        app: Celeriac,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        prefetch_multiplier: int | None = None,
        hostname: str | None = None,
        shutdown_timeout: float | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        app_spec: str | None = None,
    ) -> None:
        conf = app.conf
        self.app = app
        self.queues = app.queues(queues)
        self.concurrency = concurrency or conf.worker_concurrency or (os.cpu_count() or 1)
        self.pool_name = pool or conf.worker_pool
        self.pool_cls = pool_class(self.pool_name)
        self.prefetch_multiplier = prefetch_multiplier or conf.worker_prefetch_multiplier
        self.hostname = hostname or f"celeriac@{socket.gethostname()}"
        self.shutdown_timeout = (
            shutdown_timeout if shutdown_timeout is not None else conf.worker_shutdown_timeout
        )
        self.pool_options = PoolOptions(
            app_spec=app_spec or find_app_spec(app),
            max_tasks_per_child=max_tasks_per_child or conf.worker_max_tasks_per_child,
            max_memory_per_child=max_memory_per_child or conf.worker_max_memory_per_child,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
        )
        self.state = WorkerState()
        self._signals = 0
        self._stop: asyncio.Event | None = None
        self._cold: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Set once the worker consumes; cleared again when it has stopped.
        self.ready = threading.Event()

    # -- entry points ---------------------------------------------------------------------------
    def run(self) -> int:
        """Run until told to stop; returns the process exit status.

        After a cold shutdown the process leaves at once: threads still running abandoned tasks
        cannot be stopped, and their messages are already back on the broker.
        """
        status = asyncio.run(self.run_async())
        if self.cold:
            logging.shutdown()
            os._exit(status)
        return status

    @property
    def cold(self) -> bool:
        return self._cold is not None and self._cold.is_set()

    def request_stop(self, cold: bool = False) -> None:
        """Ask for a warm (or cold) shutdown; a second warm request turns cold."""
        self._signals += 1
        if self._stop is None or self._cold is None:
            return
        if cold or self._signals > 1:
            logger.warning("cold shutdown: returning unacked messages to the broker")
            self._cold.set()
        else:
            logger.warning("warm shutdown: finishing running tasks (signal again for cold)")
        self._stop.set()

    def stop(self, cold: bool = False) -> None:
        """Thread-safe :meth:`request_stop`, for code outside the worker's loop (tests, embeds)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.request_stop, cold)

    async def run_async(self) -> int:
        try:
            return await self._run()
        finally:
            self.ready.clear()

    async def _run(self) -> int:
        self._stop, self._cold = asyncio.Event(), asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGQUIT, self.request_stop, True)
        transport = self.app.create_transport()
        if not await self._connect(transport):
            return EXIT_BROKER_UNREACHABLE
        pool = self.pool_cls(self.app, self.concurrency, self.hostname, self.pool_options)
        consumer = Consumer(
            self.app,
            transport,
            pool,
            self.queues,
            prefetch_multiplier=self.prefetch_multiplier,
            hostname=self.hostname,
            state=self.state,
        )
        try:
            for queue in self.queues:
                await transport.declare_queue(queue)
            await pool.start()
            fetch = asyncio.create_task(consumer.run(), name="celeriac-fetch")
            fetch.add_done_callback(self._fetch_ended)
            interval = self.app.conf.worker_lease_renewal_interval or transport.lease_seconds / 3
            renew = asyncio.create_task(consumer.renew_leases(interval), name="celeriac-leases")
            self._ready()
            await self._stop.wait()
            consumer.stop_fetching()
            if self._cold.is_set():
                await self._cold_stop(consumer, fetch, renew, pool)
                return EXIT_OK
            warm = asyncio.create_task(self._warm_stop(consumer, fetch))
            cold = asyncio.create_task(self._cold.wait())
            done, _ = await asyncio.wait({warm, cold}, return_when=asyncio.FIRST_COMPLETED)
            if warm not in done or not warm.result():
                warm.cancel()
                await self._cold_stop(consumer, fetch, renew, pool)
                return EXIT_OK
            cold.cancel()
            renew.cancel()
            await consumer.acks.drain()
            await pool.stop(wait=True)
            logger.info(
                "%s stopped (warm): %d tasks processed", self.hostname, self.state.processed
            )
            return EXIT_OK
        finally:
            with contextlib.suppress(Exception):
                await transport.close()

    def _fetch_ended(self, fetch: asyncio.Task[None]) -> None:
        """The fetch loop only ends when asked to; if it died, say why and stop warm."""
        if fetch.cancelled() or fetch.exception() is None:
            return
        logger.critical(
            "the consumer stopped on an internal error: %r",
            fetch.exception(),
            exc_info=fetch.exception(),
        )
        self.request_stop()

    # -- steps ------------------------------------------------------------------------------------
    async def _connect(self, transport_: Transport) -> bool:
        conf = self.app.conf
        attempts = 1 + (
            conf.broker_connection_max_retries or 0
            if conf.broker_connection_retry_on_startup
            else 0
        )
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.wait_for(transport_.connect(), conf.broker_connection_timeout)
                return True
            except (TimeoutError, CeleriacError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                if attempt == attempts:
                    logger.critical(
                        "cannot reach the broker at %s: %s", redact_url(self.app.broker_url), reason
                    )
                    return False
                logger.warning(
                    "broker %s unreachable (%s); retry %d/%d in %.1fs",
                    redact_url(self.app.broker_url),
                    reason,
                    attempt,
                    attempts - 1,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return False

    def _ready(self) -> None:
        self.ready.set()
        logger.info(
            "%s ready: pool=%s concurrency=%d prefetch=%d queues=%s broker=%s tasks=%d",
            self.hostname,
            self.pool_name,
            self.concurrency,
            self.concurrency * self.prefetch_multiplier,
            ",".join(q.name for q in self.queues),
            redact_url(self.app.broker_url),
            len(self.app.tasks),
        )

    async def _warm_stop(self, consumer: Consumer, fetch: asyncio.Task[None]) -> bool:
        await fetch
        returned = await consumer.requeue_waiting()
        if returned:
            logger.info("returned %d fetched, not started messages to the broker", returned)
        return await consumer.wait_running(self.shutdown_timeout)

    async def _cold_stop(
        self,
        consumer: Consumer,
        fetch: asyncio.Task[None],
        renew: asyncio.Task[None],
        pool: Pool,
    ) -> None:
        renew.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(fetch, timeout=FETCH_TIMEOUT + 1)
        returned = await consumer.requeue_unacked()
        for handler in list(consumer.handlers):
            handler.cancel()
        logger.warning(
            "%s stopped (cold): %d unacked messages returned to the broker", self.hostname, returned
        )
        await pool.stop(wait=False)


def find_app_spec(app: Celeriac) -> str | None:
    """``module:attr`` under which ``app`` can be imported again (by a prefork child).

    The CLI passes ``-A`` itself; for a worker built in code, look for the module-level name
    that holds this app (``__main__`` does not count: a child cannot import it by that name).
    """
    import sys

    for module_name, module in list(sys.modules.items()):
        if module is None or module_name == "__main__":
            continue
        for attr, value in list(vars(module).items()):
            if value is app:
                return f"{module_name}:{attr}"
    return None
