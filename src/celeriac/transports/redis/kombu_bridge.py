"""Queues bound to a fanout exchange in kombu's layout: fed by a subscription while consumed.

kombu publishes to a fanout exchange with Redis PUBLISH, and a kombu consumer of a queue bound
to one (a Celery ``Broadcast`` queue) reads it from a subscription to the exchange's channel:
nothing is kept while nobody consumes. A celeriac consumer does the same through a bridge: at
its first ``get`` on such a queue it subscribes (a
:class:`~celeriac.transports.redis.fanout.RedisListener` on the exchange) and pushes whatever
arrives onto the queue's list, where the claim takes it as any other message, with a record in
``unacked`` (so it is acked, requeued and restored like the rest). A message published before
the subscription, or lost with a broken connection, is not received, as with kombu.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from celeriac.errors import TransportError
from celeriac.routing import Exchange
from celeriac.transports.redis.fanout import RedisListener
from celeriac.transports.transient import DEFAULT_BUFFER

if TYPE_CHECKING:
    from celeriac.transports.redis.kombu_transport import KombuRedisTransport

logger = logging.getLogger(__name__)


class Bridges:
    """The subscriptions of one transport's fanout-bound queues (see the module docstring)."""

    def __init__(self, transport: KombuRedisTransport) -> None:
        self._transport = transport
        #: queue -> the fanout exchanges this process bound it to (kombu keeps that in memory
        #: too)
        self.bound: dict[str, set[str]] = {}
        self._pumps: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def start(self, queues: Sequence[str]) -> None:
        """Subscribe each of ``queues`` bound to a fanout exchange, if not yet."""
        for queue in queues:
            for exchange in sorted(self.bound.get(queue, ())):
                if (queue, exchange) in self._pumps:
                    continue
                listener = RedisListener(
                    self._transport, Exchange(exchange, "fanout"), ["#"], DEFAULT_BUFFER
                )
                await listener.open()
                pump = asyncio.get_running_loop().create_task(self._pump(listener, queue))
                self._pumps[(queue, exchange)] = pump

    def pause(self, queue: str) -> None:
        """No longer consumed here: stop feeding ``queue`` (a later :meth:`start` resumes)."""
        for key in [key for key in self._pumps if key[0] == queue]:
            _cancel(self._pumps.pop(key))

    def forget(self, queue: str) -> None:
        """The queue is gone: stop feeding it."""
        self.bound.pop(queue, None)
        for key in [key for key in self._pumps if key[0] == queue]:
            self._pumps.pop(key).cancel()

    async def stop(self) -> None:
        """Stop every subscription (a pump of another, still running loop is cancelled
        there; one of a closed loop is gone already)."""
        loop = asyncio.get_running_loop()
        pumps, self._pumps = list(self._pumps.values()), {}
        for pump in pumps:
            _cancel(pump)
        await asyncio.gather(*(p for p in pumps if p.get_loop() is loop), return_exceptions=True)

    async def _pump(self, listener: RedisListener, queue: str) -> None:
        transport = self._transport
        try:
            while True:
                first = await listener.inbox.get(None)
                if first is None:
                    return
                batch = [first]
                while (more := listener.inbox.take()) is not None:
                    batch.append(more)
                try:
                    with transport.errors("fanout delivery"):
                        client = await transport.command_client()
                        await client.lpush(transport.names.glob + queue, *batch)
                except TransportError as exc:
                    logger.warning("lost %d fanout messages for %r: %s", len(batch), queue, exc)
        finally:
            await listener.close()


def _cancel(pump: asyncio.Task[None]) -> None:
    """Cancel a pump on its own loop (at once if that is the running one)."""
    owner = pump.get_loop()
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if owner is running:
        pump.cancel()
    elif not owner.is_closed():
        owner.call_soon_threadsafe(pump.cancel)


__all__ = ["Bridges"]
