"""Batches on the wire: many publishes, or many acks, in one write to the socket; and a QoS
change whose reply is awaited in the background.

aiormq's ``basic_publish`` and ``basic_ack`` each queue one frame set for its writer task and
wait for it to be written: a task switch and a ``send`` system call per message, which caps a
Python client near 4,000 publishes a second whatever the broker can take. AMQP itself has no such
limit: a channel may carry any number of ``basic.publish`` frame sets back to back, each
confirmed by its sequence number. So a batch is marshalled here into one ``ChannelFrame`` and
queued once, with a confirmation future registered per message exactly as ``basic_publish``
does (same sequence numbers, same ``message_id`` map that tells a ``basic.return`` which publish
it answers), so aiormq's reader settles them unchanged. :func:`publish_now` does the same from
a loop callback: it queues the frames for aiormq's writer without awaiting, when the channel's
lock is free (nothing else is between taking confirm numbers and queueing its frames), which
spares the sync producer a task and a loop turn per send (:mod:`celeriac.app.pipeline`).

``basic.qos`` is a synchronous method: aiormq's ``basic_qos`` writes it under the channel's rpc
lock and waits there for ``qos-ok``. The consumer changes QoS with every fetch and every early
ack (:meth:`~celeriac.transports.amqp.link.Link.need`), and only the order matters: frames on a
channel are processed in order, so an ack written after the ``basic.qos`` frame frees its place
under the new QoS. :func:`qos` writes the frame under the same lock and leaves the wait for
``qos-ok`` (and the lock) to a task, so neither the fetch nor the ack waits a round trip.

This leans on aiormq 7's channel attributes (``lock``, ``delivery_tag``, ``confirmations``,
``message_id_delivery_tag``, ``write_queue``, ``rpc_frames``). :func:`batching` checks they are
there; when they are not (another aiormq), the transport falls back to one ``basic_publish`` per
message and an awaited ``basic_qos``, slower and equally correct.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import uuid
from collections.abc import Sequence
from typing import Any

from aiormq.abc import AbstractChannel, ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

logger = logging.getLogger("celeriac.transports.amqp")

_NEEDED = (
    "lock",
    "delivery_tag",
    "confirmations",
    "message_id_delivery_tag",
    "write_queue",
    "max_content_size",
    "rpc_frames",
    "closing",
    "_Channel__lock",  # the lock under ``lock``: publish_now must see whether it is held
)
#: Messages per write: big enough to amortise, small enough that confirms start flowing early.
CHUNK = 256
#: How long a ``qos-ok`` is awaited before the channel's rpc lock is let go anyway.
QOS_REPLY_TIMEOUT = 30.0
_replies: set[asyncio.Task[None]] = set()


def batching(channel: AbstractChannel) -> bool:
    """Whether this aiormq channel has what batched writes need (asked once per channel type:
    aiormq sets them all in a channel's ``__init__``; every publish and ack asks)."""
    kind = type(channel)
    known = _batching.get(kind)
    if known is None:
        known = _batching[kind] = all(hasattr(channel, name) for name in _NEEDED)
    return known


_batching: dict[type, bool] = {}


class _MessageIds:
    """Message ids for publishes that carry none (aiormq maps a ``basic.return`` to its
    publish by it): a random prefix per process and a counter, where ``uuid4`` cost a
    ``getrandom`` call per message on a sync send's path. A forked child draws a new prefix."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


_message_ids = _MessageIds()


def _forget(channel: Any, message_id: str, tag: int) -> Any:
    def forget(_: asyncio.Future[Any]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == tag:
            channel.message_id_delivery_tag.pop(message_id, None)

    return forget


def _expect_confirm(raw: Any, props: Basic.Properties) -> asyncio.Future[Any]:
    """Register the next publish's confirmation, as ``basic_publish`` does (call under lock)."""
    if not props.message_id:
        props.message_id = _message_ids.next()
    raw.delivery_tag += 1
    tag = raw.delivery_tag
    future: asyncio.Future[Any] = raw.create_future()
    raw.confirmations[tag] = future
    raw.message_id_delivery_tag[props.message_id] = tag
    future.add_done_callback(_forget(raw, props.message_id, tag))
    return future


def _body_frames(channel: Any, body: bytes) -> list[ContentBody]:
    size = int(channel.max_content_size)
    return [ContentBody(body[i : i + size]) for i in range(0, len(body), size)]


async def publish(
    channel: AbstractChannel,
    frames: Sequence[tuple[str, str, bytes, Basic.Properties]],
    confirm: bool = True,
) -> list[asyncio.Future[Any]]:
    """Write ``mandatory`` publishes in chunks; returns each message's confirmation future
    (none with ``confirm=False``, on a channel without publisher confirms)."""
    raw: Any = channel
    if not confirm and not batching(channel):
        for exchange, key, body, props in frames:
            await channel.basic_publish(body, exchange=exchange, routing_key=key, properties=props)
        return []
    futures: list[asyncio.Future[Any]] = []
    for start in range(0, len(frames), CHUNK):
        out: list[Any] = []
        async with raw.lock:
            if channel.is_closed:
                raise RuntimeError(f"{channel!r} closed")
            for exchange, key, body, props in frames[start : start + CHUNK]:
                if len(key.encode()) > 255:
                    raise ValueError(f"routing key longer than 255 bytes: {key[:40]!r}...")
                if confirm:
                    futures.append(_expect_confirm(raw, props))
                out.append(Basic.Publish(exchange=exchange, routing_key=key, mandatory=confirm))
                out.append(ContentHeader(properties=props, body_size=len(body)))
                out.extend(_body_frames(raw, body))
            drained: asyncio.Future[Any] = raw.create_future()
            await raw.write_queue.put(
                ChannelFrame.marshall(channel_number=raw.number, frames=out, drain_future=drained)
            )
            await drained
    return futures


def publish_now(
    channel: AbstractChannel, frames: Sequence[tuple[str, str, bytes, Basic.Properties]]
) -> list[asyncio.Future[Any]] | None:
    """Queue ``mandatory`` publishes for the connection's writer without awaiting anything (a
    loop callback's way: no task, no lock wait, no drain); each message's confirmation future,
    or ``None``, with nothing done, when that cannot be done safely now: the channel is not
    a batching one, is closed, or its lock is held (a publish or rpc in progress: messages
    queued now would take confirm numbers ahead of its frames), the writer's queue is full, a
    routing key is too long (the awaited path raises that), or the batch is over a chunk."""
    raw: Any = channel
    if (
        not batching(channel)
        or channel.is_closed
        or raw._Channel__lock.locked()
        or raw.write_queue.full()
        or len(frames) > CHUNK
        or any(len(key.encode()) > 255 for _, key, _, _ in frames)
    ):
        return None
    futures: list[asyncio.Future[Any]] = []
    out: list[Any] = []
    for exchange, key, body, props in frames:
        futures.append(_expect_confirm(raw, props))
        out.append(Basic.Publish(exchange=exchange, routing_key=key, mandatory=True))
        out.append(ContentHeader(properties=props, body_size=len(body)))
        out.extend(_body_frames(raw, body))
    raw.write_queue.put_nowait(ChannelFrame.marshall(channel_number=raw.number, frames=out))
    return futures


async def ack(channel: AbstractChannel, tags: Sequence[int]) -> None:
    """``basic.ack`` for each tag, all in one write (or one call each without batching)."""
    if not tags:
        return
    if not batching(channel):
        for tag in tags:
            await channel.basic_ack(tag)
        return
    raw: Any = channel
    if channel.is_closed:
        raise RuntimeError(f"{channel!r} closed")
    drained: asyncio.Future[Any] = raw.create_future()
    await raw.write_queue.put(
        ChannelFrame.marshall(
            channel_number=raw.number,
            frames=[Basic.Ack(delivery_tag=tag) for tag in tags],
            drain_future=drained,
        )
    )
    await drained


async def qos(channel: AbstractChannel, count: int) -> None:
    """``basic.qos`` (channel-wide) written now, its ``qos-ok`` awaited by a task that holds the
    channel's rpc lock until it comes (so no other rpc takes it for its own reply)."""
    raw: Any = channel
    if not batching(channel):
        await channel.basic_qos(prefetch_count=count, global_=True)
        return
    held = raw.lock  # aiormq's: an async context manager around the channel's rpc lock
    await held.__aenter__()
    try:
        drained: asyncio.Future[Any] = raw.create_future()
        await raw.write_queue.put(
            ChannelFrame.marshall(
                channel_number=raw.number,
                frames=[Basic.Qos(prefetch_count=count, global_=True)],
                drain_future=drained,
            )
        )
        await drained
    except BaseException as exc:
        await held.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    reply = asyncio.get_running_loop().create_task(_qos_reply(raw, held))
    _replies.add(reply)
    reply.add_done_callback(_replies.discard)


async def _qos_reply(raw: Any, held: Any) -> None:
    """Take ``qos-ok`` off the channel's rpc replies, then let the lock go (also when the
    channel closes first, or the reply is overdue)."""
    getter = asyncio.ensure_future(raw.rpc_frames.get())
    try:
        done, _ = await asyncio.wait(
            {getter, raw.closing}, timeout=QOS_REPLY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            raw.rpc_frames.task_done()
            if not isinstance(getter.result(), Basic.QosOk):
                logger.warning("expected basic.qos-ok, got %r", getter.result())
    finally:
        getter.cancel()
        await held.__aexit__(None, None, None)
