"""The worker's built-in components, in the order they usually start.

timer -> connection -> pool -> consumer -> heartbeat -> control -> autoscaler -> reloader.
Each is small; the shutdown *policy* (warm, cold) lives in :mod:`celeriac.worker.worker`, the
components only open and close what they own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from celeriac import signals
from celeriac.errors import CeleriacError, ImproperlyConfigured, TransportError
from celeriac.transports.base import Transport
from celeriac.utils.urls import redact_url
from celeriac.worker.components import Component
from celeriac.worker.consumer import Consumer

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

T = TypeVar("T")
#: What one start attempt on a connected link may take, in ``broker_connection_timeout``s.
ATTEMPT_TIMEOUTS = 5

logger = logging.getLogger("celeriac.worker")


class StartupError(CeleriacError):
    """A component could not start; the worker exits non-zero with this one-line reason."""


class Timer(Component):
    """Runs coroutines every N seconds on the worker's loop; stops them all together."""

    name = "timer"

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, worker: Worker) -> None:
        worker.timer = self

    def every(self, interval: float, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Call ``fn`` every ``interval`` seconds; an exception is logged and the next call
        happens as usual (a renewal that fails once must not stop renewing)."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await fn()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("periodic %s failed", name)

        self._tasks.append(asyncio.create_task(loop(), name=f"celeriac-{name}"))

    async def stop(self, worker: Worker) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


async def connect_with_retries(worker: Worker) -> Transport:
    """A connected transport with the worker's queues declared (see :func:`start_with_retries`).

    A link that dies while the queues are declared (a broker restarting, a connection left
    half-open, whose client learns of it only when the pending call is cancelled) is a failed
    attempt like a refused connect: each attempt starts over on a fresh transport. Without
    that, a worker (re)started by its supervisor during a network fault exited with a
    traceback instead of waiting for the broker (found by tests/chaos)."""

    async def declare(transport: Transport) -> None:
        await declare_queues(worker, transport, worker.app.conf.broker_connection_timeout)

    transport, _ = await start_with_retries(worker, "declare the queues on", declare)
    return transport


async def start_with_retries(
    worker: Worker, doing: str, attempt: Callable[[Transport], Awaitable[T]]
) -> tuple[Transport, T]:
    """A fresh transport, connected, and ``attempt(transport)`` done on it, retried on a new
    transport each time as the worker's connection is (``broker_connection_max_retries``,
    ``broker_connection_retry_on_startup``, ``broker_connection_timeout`` per connect); raises
    StartupError at the end. For every component that opens a link of its own while the
    worker starts (connection, events, control): a broker that goes away then is waited for,
    not a reason to exit (found by tests/chaos: a link cut as the events started ended the
    worker)."""
    conf = worker.app.conf
    retries = conf.broker_connection_max_retries or 0
    attempts = 1 + (retries if conf.broker_connection_retry_on_startup else 0)
    delay = 0.5
    url = redact_url(worker.app.broker_url)
    for number in range(1, attempts + 1):
        transport = worker.app.create_transport()
        step = "reach"
        try:
            await asyncio.wait_for(transport.connect(), conf.broker_connection_timeout)
            step = doing
            # bounded too: a link that goes half-open now would hold the start for ever
            bound = conf.broker_connection_timeout * ATTEMPT_TIMEOUTS
            return transport, await asyncio.wait_for(_lost_as_error(attempt(transport)), bound)
        except ImproperlyConfigured:
            await close_quietly(transport)
            raise
        except (CeleriacError, OSError, TimeoutError) as exc:
            await close_quietly(transport)
            reason = str(exc) or type(exc).__name__
            if number == attempts:
                raise StartupError(f"cannot {step} the broker at {url}: {reason}") from None
            logger.warning(
                "broker %s: cannot %s it (%s); retry %d/%d in %.1fs",
                url,
                step,
                reason,
                number,
                attempts - 1,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")  # the loop returns or raises


async def _lost_as_error(step: Awaitable[T]) -> T:
    """``step``'s value; a ``CancelledError`` that does not cancel this task (a client cancels
    its pending calls when their connection closes) is the connection's loss, raised as a
    TransportError."""
    current = asyncio.current_task()
    try:
        return await step
    except asyncio.CancelledError:
        if current is None or current.cancelling():
            raise
        raise TransportError("the connection closed while starting") from None


async def declare_queues(worker: Worker, transport: Transport, timeout: float) -> None:
    """Declare the worker's queues, each within ``timeout``."""
    for queue in worker.queues:
        await asyncio.wait_for(transport.declare_queue(queue), timeout)


async def close_quietly(transport: Transport) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(transport.close(), 5.0)


class Connection(Component):
    """The worker's broker connection, and the queues it consumes, declared."""

    name = "connection"

    async def start(self, worker: Worker) -> None:
        worker.transport = await connect_with_retries(worker)

    async def stop(self, worker: Worker) -> None:
        if worker.transport is not None:
            with contextlib.suppress(Exception):
                await worker.transport.close()


class PoolStep(Component):
    name = "pool"

    async def start(self, worker: Worker) -> None:
        pool = worker.pool_cls(worker.app, worker.concurrency, worker.hostname, worker.pool_options)
        pool.revoked = worker.state.revoked
        await pool.start()
        worker.pool = pool

    async def stop(self, worker: Worker) -> None:
        if worker.pool is not None:
            await worker.pool.stop(wait=not worker.cold)
        # results written behind the tasks' backs must be stored before the worker leaves
        await asyncio.to_thread(worker.app.flush_results)


class ConsumerStep(Component):
    """Fetches and dispatches. Stopping it only settles acks: the worker has already drained
    (warm) or returned (cold) what it held."""

    name = "consumer"
    requires = ("connection", "pool")

    async def start(self, worker: Worker) -> None:
        assert worker.transport is not None and worker.pool is not None
        consumer = Consumer(
            worker.app,
            worker.transport,
            worker.pool,
            worker.queues,
            prefetch_multiplier=worker.prefetch_multiplier,
            hostname=worker.hostname,
            state=worker.state,
        )
        consumer.controller = worker
        worker.consumer = consumer
        worker.fetch_task = asyncio.create_task(consumer.run(), name="celeriac-fetch")
        worker.fetch_task.add_done_callback(worker.fetch_ended)

    async def stop(self, worker: Worker) -> None:
        consumer = worker.consumer
        if consumer is not None:
            consumer.stop_fetching()
            if not worker.cold:
                await consumer.acks.drain()


class Heartbeat(Component):
    """Renews the lease of every message the worker holds, so a long ``acks_late`` task is
    never redelivered to another worker while it runs.

    This is celeriac's heartbeat, so each beat sends Celery's ``heartbeat_sent`` (sender: this
    component), unless the worker runs ``--without-heartbeat``; the leases are renewed either
    way, since without that a long task's message would go to another worker.
    """

    name = "heartbeat"
    requires = ("timer", "consumer")

    async def start(self, worker: Worker) -> None:
        assert worker.transport is not None
        interval = worker.app.conf.worker_lease_renewal_interval
        if interval is None:
            interval = worker.transport.lease_seconds / 3
        worker.timer.every(interval, lambda: self.beat(worker), "lease-renewal")

    async def beat(self, worker: Worker) -> None:
        await renew_leases(worker)
        if not worker.without_heartbeat:
            signals.heartbeat_sent.send(self)


async def renew_leases(worker: Worker) -> None:
    consumer, transport = worker.consumer, worker.transport
    if consumer is None or transport is None:
        return
    held = list(consumer.unacked.values())
    if held:
        try:
            await transport.extend(held)
        except TransportError as exc:
            logger.warning("could not renew %d leases: %s", len(held), exc)


class ReloaderStep(Component):
    """``--reload``: when a source file of the app changes, stop warm and start again."""

    name = "reloader"
    requires = ("consumer",)

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def enabled(self, worker: Worker) -> bool:
        return worker.reload

    async def start(self, worker: Worker) -> None:
        from celeriac.worker.reload import Reloader, app_source_paths

        paths = app_source_paths(worker.app)
        if not paths:
            logger.warning("--reload: no source directory of the app to watch")
            return

        def changed(files: set[Path]) -> None:
            logger.warning(
                "source changed (%s); restarting the worker",
                ", ".join(sorted(f.name for f in files)),
            )
            worker.request_restart()

        reloader = Reloader(paths, changed)
        self._task = asyncio.create_task(reloader.run(self._stop), name="celeriac-reloader")
        logger.info("--reload: watching %s", ", ".join(str(p) for p in paths))

    async def stop(self, worker: Worker) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
