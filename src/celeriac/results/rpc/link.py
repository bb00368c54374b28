"""``rpc://`` over RabbitMQ: one connection per process, its reply consumer and publisher.

Everything here runs on the link's own :class:`~celeriac.utils.portal.Portal` thread (aio-pika
objects belong to the loop that made them); :class:`~celeriac.results.rpc.RPCBackend` calls in
from any thread. One connection carries both directions, on two channels: the caller's reply
consumer (no-ack: a reply is a copy of a record, and the caller keeps only the latest) and the
worker's publisher (publisher confirms on, so a batch of results is on the broker when
``publish`` returns).

Faults: a publish that fails on a dropped connection is sent once more on a new one (a reply
sent twice is harmless: the caller keeps the latest record). A consumer whose connection drops
reconnects in the background with backoff, re-declares the *same* reply queue (it outlives a
short disconnection thanks to ``x-expires``) and consumes again, so replies published while it
was away are delivered then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from celeriac.results.rpc.route import OnReply, Reply
from celeriac.transports.amqp.url import AmqpTarget, connect_first
from celeriac.utils.portal import Portal

logger = logging.getLogger("celeriac.results.rpc")

__all__ = ["ReplyLink"]

RECONNECT_MAX = 10.0
#: How long a call from another thread waits for the link's loop (a declaration, a publish).
CALL_TIMEOUT = 30.0


class ReplyLink:
    """One AMQP connection on a thread of its own: consume a reply queue, publish replies."""

    def __init__(
        self,
        targets: Sequence[AmqpTarget],
        queue_name: str,
        queue_expires: float,
        on_reply: OnReply,
    ) -> None:
        self.portal = Portal("celeriac-rpc")
        self.queue_name = queue_name
        self.display = targets[0].display
        self._targets = list(targets)
        self._queue_expires = queue_expires
        self._on_reply = on_reply
        self._connection: AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._consumer: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._queue: AbstractQueue | None = None
        self._consuming = False
        self._closing = False
        self._started = False
        self._lock: asyncio.Lock | None = None
        self._reconnecting: asyncio.Task[None] | None = None

    # -- connection -----------------------------------------------------------------------------
    async def _connect(self) -> AbstractConnection:
        """The live connection, made (with its consumer, once consuming) when there is none."""
        self._started = True
        connection = self._connection
        if connection is not None and not connection.is_closed:
            return connection
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            connection = self._connection
            if connection is not None and not connection.is_closed:
                return connection
            connection = await connect_first(self._targets)
            connection.close_callbacks.add(self._on_close)
            self._connection, self._publisher, self._consumer = connection, None, None
            if self._consuming:
                await self._consume(connection)
            return connection

    def _on_close(self, sender: Any, exc: BaseException | None = None) -> None:
        if sender is self._connection:  # it may not read as closed yet: forget it now
            self._connection, self._publisher, self._consumer = None, None, None
        if self._closing or not self._consuming:
            return
        logger.warning("rpc results: connection lost (%s); reconnecting", exc)
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self._connect()
            except Exception as exc:  # keep trying: waiters depend on this consumer
                logger.warning("rpc results: reconnect failed (%s); next in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
            else:
                logger.info("rpc results: reconnected; consuming %s again", self.queue_name)
                return

    # -- the caller's reply queue -----------------------------------------------------------------
    async def _consume(self, connection: AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(
            self.queue_name,
            durable=False,
            arguments={"x-expires": max(1, int(self._queue_expires * 1000))},
        )
        self._consumer_tag = await queue.consume(self._deliver, no_ack=True)
        self._consumer, self._queue = channel, queue

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        try:
            self._on_reply(message.body, message.content_type, message.content_encoding)
        except Exception:  # one bad reply must not stop the consumer
            logger.exception("rpc results: could not handle a reply")

    async def start_consuming(self) -> None:
        """Declare the reply queue and consume it (idempotent)."""
        if self._consuming:
            return
        connection = await self._connect()
        if self._consumer is None:
            await self._consume(connection)
        self._consuming = True

    # -- the worker's replies -------------------------------------------------------------------
    async def publish(self, replies: Sequence[Reply]) -> None:
        """Publish ``replies`` through the default exchange and wait for every confirm; once
        more on a fresh connection if the first attempt fails."""
        for attempt in (0, 1):
            try:
                channel = self._publisher
                if channel is None or channel.is_closed:
                    connection = await self._connect()
                    channel = self._publisher = await connection.channel(publisher_confirms=True)
                exchange = channel.default_exchange
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                body,
                                content_type=content_type,
                                content_encoding=encoding,
                                correlation_id=task_id,
                                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
                            ),
                            routing_key=reply_to,
                            mandatory=False,  # a caller that is gone is no error of ours
                        )
                        for reply_to, task_id, content_type, encoding, body in replies
                    )
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if attempt:
                    raise
                self._publisher = None
                current = self._connection
                if current is None or current.is_closed:
                    self._connection = None
                # else only the channel failed: leave the connection (and its consumer) alone

    # -- the calls of the backend, from any thread (see route.Link) --------------------------------
    def start(self) -> None:
        self.portal.call(self.start_consuming(), CALL_TIMEOUT)

    def send(self, replies: Sequence[Reply]) -> None:
        self.portal.call(self.publish(replies), CALL_TIMEOUT)

    async def asend(self, replies: Sequence[Reply]) -> None:
        future = asyncio.run_coroutine_threadsafe(self.publish(replies), self.portal.loop)
        await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT)

    # -- shutdown -----------------------------------------------------------------------------
    async def _aclose(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed:
            return
        try:
            channel, queue = self._consumer, self._queue
            if channel is not None and not channel.is_closed:
                if queue is not None and self._consumer_tag is not None:
                    await queue.cancel(self._consumer_tag)  # else the broker does, with a warning
                await channel.queue_delete(self.queue_name)
        except Exception as exc:  # it expires by itself anyway
            logger.debug("rpc results: could not delete %s: %s", self.queue_name, exc)
        await connection.close()

    def close(self) -> None:
        """Delete the reply queue, close the connection, stop the thread."""
        if not self._started:
            return
        try:
            self.portal.call(self._aclose(), timeout=10)
        except Exception as exc:
            logger.debug("rpc results: close: %s", exc)
        self.portal.close()
