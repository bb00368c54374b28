"""The producer side of an app: declare what a send needs once, then publish in one round trip.

Sync callers (a script, a Django view, a thread of the threads pool) publish through the
transport's native blocking path where it has one (memory, SQLite, Redis), else through the
process's :class:`~celeriac.utils.portal.Portal` loop: pipelined where the transport allows a
window of unconfirmed sends (RabbitMQ, :mod:`celeriac.app.pipeline`), else waiting for each.
Async callers publish on a transport bound to their own running loop. Queues are declared once
per process, not per send, and a publish that fails with a broker error is retried by
``task_publish_retry_policy``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac.app import retrying
from celeriac.app.pipeline import PublishPipeline
from celeriac.routing import Exchange, Queue
from celeriac.transports.base import Outgoing, Transport
from celeriac.utils.portal import Portal

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Producer:
    """Publishes an app's messages; one per app, shared by every thread of the process."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._portal = Portal()
        self._transport: Transport | None = None
        self._pipeline: PublishPipeline | None = None
        self._declared: set[str] = set()
        self._loop_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Transport] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_declared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[str]] = (
            weakref.WeakKeyDictionary()
        )

    # -- retry policy ---------------------------------------------------------------------------
    def _policy(self) -> retrying.Policy:
        return retrying.policy_of(self.app.conf)

    def _with_retries(self, action: Callable[[], T]) -> T:
        return retrying.call(self._policy(), action)

    # -- sync path ------------------------------------------------------------------------------
    def _sync_transport(self) -> Transport:
        with self._lock:
            if self._transport is None:
                transport = self.app.create_transport()
                self._portal.call(transport.connect())
                self._transport = transport
            return self._transport

    def declare(self, queues: Iterable[Queue], exchanges: Iterable[Exchange] = ()) -> None:
        """Declare queues (with their exchanges and bindings) and exchanges not yet declared by
        this process; each is declared once per process, not once per send."""
        missing = [q for q in queues if q.name not in self._declared]
        new_exchanges = [e for e in exchanges if f"exchange:{e.name}" not in self._declared]
        if not missing and not new_exchanges:
            return
        transport = self._sync_transport()

        async def run() -> None:
            for exchange in new_exchanges:
                await transport.declare_exchange(exchange)
            for queue in missing:
                await transport.declare_queue(queue)

        self._with_retries(lambda: self._portal.call(run()))
        self._declared.update(q.name for q in missing)
        self._declared.update(f"exchange:{e.name}" for e in new_exchanges)

    def _signed(self, items: Sequence[Outgoing]) -> Sequence[Outgoing]:
        """``items`` signed when the app signs (``security_key``): each message gains its
        signature header, and its envelope is built again from the signed message."""
        security = self.app.security
        if security is None or security.signer is None:
            return items
        sign = security.signer.sign
        return [dataclasses.replace(i, message=sign(i.message), wire=None) for i in items]

    def send(
        self,
        items: Sequence[Outgoing],
        queues: Iterable[Queue] = (),
        exchanges: Iterable[Exchange] = (),
    ) -> list[int]:
        """Publish from sync code: declares first (once), then one batch publish.

        Returns each message's routed count; through a pipelined window (see
        :mod:`celeriac.app.pipeline`) it is not known yet when this returns, and 1 is given.
        """
        items = self._signed(items)
        self.declare(queues, exchanges)
        transport = self._sync_transport()
        if transport.native_sync_publish:
            return self._with_retries(lambda: transport.publish_sync(items))
        if transport.sync_publish_window > 0:
            self._pipeline_for(transport).send(items)
            return [1] * len(items)
        return self._with_retries(lambda: self._portal.call(transport.publish_batch(items)))

    def _pipeline_for(self, transport: Transport) -> PublishPipeline:
        with self._lock:
            pipeline = self._pipeline
            mine = pipeline is not None and pipeline.pid == os.getpid()
            if pipeline is None or not mine or pipeline.transport is not transport:
                pipeline = PublishPipeline(
                    self._portal, transport, transport.sync_publish_window, self._policy
                )
                self._pipeline = pipeline
            return pipeline

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every message sent from sync code is on the broker (confirmed); raises
        the error of any that could not be published. Only sends within a ``confirm_window``
        can be pending: RabbitMQ's (the process's, pipelined through the portal loop) and
        Redis' (the calling thread's, written ahead of their replies; ``timeout`` is then the
        connection's own). On SQLite and in memory a send returns once stored."""
        pipeline = self._pipeline
        if pipeline is not None and pipeline.pid == os.getpid():
            pipeline.flush(timeout)
        transport = self._transport
        if transport is not None:  # what failed is published again, by the retry policy
            self._with_retries(transport.flush_sync)

    # -- async path -----------------------------------------------------------------------------
    async def _loop_transport(self) -> Transport:
        loop = asyncio.get_running_loop()
        transport = self._loop_transports.get(loop)
        if transport is None:
            transport = self.app.create_transport()
            await transport.connect()
            self._loop_transports[loop] = transport
            self._loop_declared[loop] = set()
        return transport

    async def asend(
        self,
        items: Sequence[Outgoing],
        queues: Iterable[Queue] = (),
        exchanges: Iterable[Exchange] = (),
    ) -> list[int]:
        """Publish from async code, on a transport bound to the running loop; declares the
        exchanges and queues not yet declared on that loop first."""
        items = self._signed(items)
        transport = await self._loop_transport()
        declared = self._loop_declared[asyncio.get_running_loop()]

        async def attempt() -> list[int]:
            for exchange in exchanges:
                if f"exchange:{exchange.name}" not in declared:
                    await transport.declare_exchange(exchange)
                    declared.add(f"exchange:{exchange.name}")
            for queue in queues:
                if queue.name not in declared:
                    await transport.declare_queue(queue)
                    declared.add(queue.name)
            return await transport.publish_batch(items)

        return await retrying.acall(self._policy(), attempt)

    async def aopen(self, queues: Iterable[Queue] = ()) -> None:
        """Connect this loop's transport and declare ``queues`` (an async web app's start-up:
        a broker that cannot be reached fails there, and the first send is one publish)."""
        await self.asend([], queues=queues)

    async def aclose(self) -> None:
        """Close the transport bound to the running loop (an async web app's shutdown)."""
        loop = asyncio.get_running_loop()
        transport = self._loop_transports.pop(loop, None)
        self._loop_declared.pop(loop, None)
        if transport is not None:
            await transport.close()

    def close(self) -> None:
        """Close the sync transport and the portal loop; loop-bound transports close with loops.
        Pipelined sends are flushed first (what cannot be published is logged as lost)."""
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                self._portal.call(transport.close(), timeout=5)
            except Exception as exc:
                logger.debug("closing producer transport: %s", exc)
        self._portal.close()
        self._declared.clear()

    def portal_call(self, coro: Any) -> Any:
        """Run a coroutine on the producer's portal loop (for the CLI's one-off operations)."""
        return self._portal.call(coro)
