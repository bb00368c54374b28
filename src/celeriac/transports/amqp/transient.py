"""Transient fan-out on RabbitMQ: exchanges of the caller's type, a queue of its own per listener.

Celery's layout, so that Celery's tools and celeriac's workers hear each other (``celeryev`` is a
durable topic exchange, ``celery.pidbox`` a transient fanout one: the exchange is declared with
the type and durability the caller gives, and one that exists otherwise is used as it is, with
a warning, rather than failing with ``PRECONDITION_FAILED``). Publishers declare an exchange once
per publish channel (RabbitMQ closes the channel over a publish to an exchange deleted since, and
the next publish, on a new channel, declares again); listeners declare it each time they bind.

**Publishing**: ``basic.publish`` with ``delivery_mode`` 1, not mandatory, not confirmed, on a
channel of its own (the task channel's publisher confirms count every publish on it), a batch in
a few socket writes (:mod:`~celeriac.transports.amqp.wire`). The body goes as it is with the
headers as the AMQP table, as kombu sends them. An exchange with no queue bound drops it: that
is RabbitMQ's "nobody listens".

**A listener** declares ``<exchange>.<uuid4>`` (as Celery's ``celeryev.<uuid>``): exclusive and
auto-delete, so it goes with its consumer or its connection, with ``x-message-ttl``
(``transient_retention``, 60 s), ``x-max-length`` = ``buffer`` and ``x-overflow: drop-head``, so a
listener whose process stops reading cannot make RabbitMQ pile messages up. It is bound with its
patterns (topic, direct) or once (fanout, headers), and consumed with ``no_ack`` on a channel of
its own into the listener's inbox. Closing it deletes the queue and closes the channel. A lost
channel or connection is noticed by a watcher task, which subscribes again (a new queue) with
back-off (0.1 s doubling to 5 s) through the transport's reconnecting link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelPreconditionFailed
from pamqp.commands import Basic

from celeriac.errors import TransportError
from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.transports.amqp import wire
from celeriac.transports.amqp.link import Frame, Link
from celeriac.transports.transient import InboxListener, backoff

if TYPE_CHECKING:
    from celeriac.transports.amqp.transport import AMQPTransport

logger = logging.getLogger("celeriac.transports.amqp")

_PROPERTIES = ("correlation_id", "priority", "reply_to")


async def declare_exchange(link: Link, exchange: Exchange, *, cached: bool = True) -> None:
    """Declare ``exchange`` as given (once per publish channel when ``cached``); an existing one
    of another type or durability is used as it is (warned of)."""
    key = f"transient:{exchange.name}"
    if not exchange.name or (cached and key in link.declared):
        return
    channel = await link.channel("control")
    try:
        await channel.exchange_declare(
            exchange.name, exchange_type=exchange.type, durable=exchange.durable
        )
    except ChannelPreconditionFailed as exc:
        logger.warning(
            "exchange %r exists on RabbitMQ declared otherwise than %s (%s); using it as it is",
            exchange.name,
            exchange,
            exc,
        )
        channel = await link.channel("control")
        await channel.exchange_declare(exchange.name, passive=True)
    link.declared[key] = time.monotonic()
    link.known_exchanges.add(exchange.name)


def _properties(message: Message) -> Basic.Properties:
    props = message.properties
    priority = props.get("priority")
    return Basic.Properties(
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=dict(message.headers),
        delivery_mode=1,
        priority=int(priority) if priority is not None else None,
        correlation_id=_text(props.get("correlation_id")),
        reply_to=_text(props.get("reply_to")),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


async def publish(
    transport: AMQPTransport, exchange: Exchange, routing_key: str, messages: Sequence[Message]
) -> None:
    """Publish ``messages`` to ``exchange`` (declared first, once per connection)."""
    frames: list[Frame] = [
        (exchange.name, routing_key, message.body, _properties(message)) for message in messages
    ]
    link = await transport.link()
    with transport.errors(f"publishing to {exchange.name!r}"):
        channel = await link.channel("transient")  # no publisher confirms on this one
        if channel is not link.transient_channel:
            # new, or reopened: RabbitMQ closes it over a publish to an exchange deleted since
            # it was declared, so declare them all again
            for key in [k for k in link.declared if k.startswith("transient:")]:
                del link.declared[key]
            link.transient_channel = channel
        await declare_exchange(link, exchange)
        await wire.publish(channel, frames, confirm=False)


class AMQPListener(InboxListener[DeliveredMessage]):
    """A queue of its own, consumed with no-ack (see the module docstring)."""

    def __init__(
        self,
        transport: AMQPTransport,
        exchange: Exchange,
        patterns: Sequence[str],
        buffer: int,
    ) -> None:
        super().__init__(exchange, patterns, buffer)
        self.transport = transport
        self.queue = ""
        self._channel: Any = None  # aiormq's channel
        self._wrapper: Any = None  # aio-pika's, kept to close it
        self._watch: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def binding_keys(self) -> list[str]:
        if self.exchange.type in ("topic", "direct"):
            return list(dict.fromkeys(self.patterns))
        return [""]

    def arguments(self) -> dict[str, Any]:
        return {
            "x-message-ttl": int(self.transport.transient_retention * 1000),
            "x-max-length": self.buffer,
            "x-overflow": "drop-head",
        }

    async def open(self) -> None:
        if self._watch is not None:
            return
        link = await self.transport.link()
        with self.transport.errors(f"listening to {self.exchange.name!r}"):
            await self._subscribe(link)
        self._loop = asyncio.get_running_loop()
        self._watch = self._loop.create_task(self._watch_loop())
        self.transport.opened(self)

    async def _subscribe(self, link: Link) -> None:
        await declare_exchange(link, self.exchange, cached=False)  # it may be gone since
        wrapper = link.connection.channel(publisher_confirms=False, on_return_raises=False)
        await wrapper.initialize()
        try:
            channel = await wrapper.get_underlay_channel()
            queue = f"{self.exchange.name}.{uuid.uuid4()}"
            await channel.queue_declare(
                queue, durable=False, auto_delete=True, exclusive=True, arguments=self.arguments()
            )
            for key in self.binding_keys():
                await channel.queue_bind(queue, self.exchange.name, routing_key=key)
            await channel.basic_consume(queue, self._on_message, no_ack=True)
        except BaseException:
            with contextlib.suppress(Exception):
                await wrapper.close()
            raise
        self._wrapper, self._channel, self.queue = wrapper, channel, queue

    async def _on_message(self, raw: DeliveredMessage) -> None:
        self.inbox.put(raw)

    def decode(self, item: DeliveredMessage) -> Message:
        props = item.header.properties
        properties: dict[str, Any] = {"delivery_mode": props.delivery_mode or 1}
        for name in _PROPERTIES:
            value = getattr(props, name, None)
            if value is not None:
                properties[name] = value
        delivery = item.delivery
        properties["delivery_info"] = {
            "exchange": getattr(delivery, "exchange", self.exchange.name) or "",
            "routing_key": getattr(delivery, "routing_key", "") or "",
        }
        return Message(
            headers=dict(props.headers or {}),
            body=bytes(item.body),
            content_type=props.content_type or "application/json",
            content_encoding=props.content_encoding or "utf-8",
            properties=properties,
        )

    async def _watch_loop(self) -> None:
        """Wait for the channel to close under us; then subscribe again, with back-off."""
        pause = 0.0
        while True:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.closing
            logger.warning("listener on %r lost its channel; listening again", self.exchange.name)
            while True:
                pause = backoff(pause, 0.1, 5.0)
                await asyncio.sleep(pause)  # back-off before reconnecting
                try:
                    link = await self.transport.link()
                    with self.transport.errors(f"listening to {self.exchange.name!r}"):
                        await self._subscribe(link)
                except TransportError as exc:
                    logger.debug("listening again failed: %s", exc)
                    continue
                pause = 0.0
                break

    async def close(self) -> None:
        """Stop consuming, delete the queue and close the channel."""
        self.inbox.close()
        watch, self._watch = self._watch, None
        if watch is None:
            return
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await self._release()
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(watch.cancel)
            asyncio.run_coroutine_threadsafe(self._release(), self._loop)
        self.transport.closed(self)

    async def _release(self) -> None:
        channel, self._channel = self._channel, None
        wrapper, self._wrapper = self._wrapper, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):  # gone with its connection: nothing to delete
                for tag in list(channel.consumers):  # first, or the delete reads as a cancel
                    await channel.basic_cancel(tag)
                await channel.queue_delete(self.queue)
        if wrapper is not None:
            with contextlib.suppress(Exception):
                await wrapper.close()


__all__ = ["AMQPListener", "declare_exchange", "publish"]
