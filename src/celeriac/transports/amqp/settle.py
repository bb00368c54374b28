"""What happens to an AMQP delivery after RabbitMQ pushed it: admission, acks, requeues, rejects.

Kept apart from :mod:`celeriac.transports.amqp` because every path here has the same shape:
check the delivery still belongs to a live channel, publish a copy with new book-keeping headers
(confirmed), then ack the original. Publishing before acking means a crash in between leaves a
duplicate, never a loss; the copy's headers carry the counts (:mod:`~.amqp_codec`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelNotFoundEntity
from pamqp.commands import Basic

from celeriac.transports.amqp import codec, topology, wire
from celeriac.transports.amqp.link import Frame, Link
from celeriac.transports.base import DeadLetter, Delivery

if TYPE_CHECKING:
    from celeriac.transports.amqp import AMQPTransport

logger = logging.getLogger("celeriac.transports.amqp")

RETURN_TIMEOUT = 5.0
DEAD_LETTER_SCAN = 10_000


def lost_reason(counts: codec.Counts, max_deliveries: int) -> str:
    """Why a message that keeps losing its worker is dead-lettered."""
    return (
        f"delivered {counts.lost} times to a worker that never settled it "
        f"(its connection died; max_deliveries={max_deliveries})"
    )


class Settler:
    """The settle paths of one :class:`~celeriac.transports.amqp.AMQPTransport`."""

    def __init__(self, transport: AMQPTransport) -> None:
        self.transport = transport

    # -- taking deliveries --------------------------------------------------------------------
    async def exists(self, link: Link, queue: str) -> bool:
        """Whether ``queue`` exists (checked on the control channel: a ``basic.consume`` or
        ``basic.get`` on a missing queue would close the consume channel and what it holds)."""
        key = f"exists:{queue}"
        if key in link.declared:
            return True
        channel = await link.channel("control")
        try:
            await channel.queue_declare(queue, passive=True)
        except ChannelNotFoundEntity:
            return False
        link.declared[key] = time.monotonic()
        return True

    async def poll(self, link: Link, queues: list[str], max_count: int) -> list[Delivery]:
        """What is ready now: buffered deliveries, then ``basic.get`` round-robin."""
        taken = link.take(queues, max_count)
        try:
            live = [q for q in queues if await self.exists(link, q)]
            channel = await link.channel("consume")
            while live and len(taken) < max_count:
                for queue in list(live):
                    raw = await channel.basic_get(queue, no_ack=False)
                    if not isinstance(raw.delivery, Basic.GetOk):
                        live.remove(queue)
                        continue
                    taken.append((queue, raw))
                    if len(taken) >= max_count:
                        break
        except asyncio.CancelledError:
            link.put_back(taken)  # held by this channel: the next get hands them out
            raise
        taken += link.take(queues, max_count - len(taken))
        while True:  # admitting may recycle some: fetch no more, return what is left
            deliveries = await self.admit(link, taken)
            if deliveries or not taken:
                return deliveries
            taken = link.take(queues, max_count)
            if not taken:
                return []

    async def admit(self, link: Link, taken: list[tuple[str, DeliveredMessage]]) -> list[Delivery]:
        """Deliveries for the caller; redelivered messages are recycled instead (see module)."""
        fresh: list[Delivery] = []
        recycle: list[tuple[str, DeliveredMessage, codec.Counts]] = []
        for queue, raw in taken:
            counts = codec.counts_of(raw)
            if counts.redelivered:
                recycle.append((queue, raw, counts))
                continue
            message = codec.message_of(raw)
            tag = codec.tag_of(raw)
            delivery = Delivery(
                tag=(link.generation, tag),
                queue=queue,
                payload=codec.payload_of(raw, message),
                delivery_count=counts.delivery_count,
                transport_data={"raw": raw, "link": link, "counts": counts},
                _message=message,
            )
            link.held.add(tag)
            fresh.append(delivery)
        if recycle:
            try:
                await asyncio.shield(self._recycle(link, recycle))
            except asyncio.CancelledError:
                link.put_back([(d.queue, d.transport_data["raw"]) for d in fresh])
                for delivery in fresh:
                    link.held.discard(delivery.tag[1])
                raise
        return fresh

    async def _recycle(
        self, link: Link, recycle: list[tuple[str, DeliveredMessage, codec.Counts]]
    ) -> None:
        """Publish copies of redelivered messages with the loss counted, or dead-letter them."""
        limit = self.transport.max_deliveries
        frames: list[Frame] = []
        dead: list[DeadLetter] = []
        for queue, raw, counts in recycle:
            done = codec.Counts(counts.delivery_count - 1, counts.lost, False)
            if counts.lost >= limit:
                reason = lost_reason(counts, limit)
                logger.error("dead-lettering a message from %r: %s", queue, reason)
                frames.append(await self._dead_letter_frame(link, queue, raw, done, reason))
                dead.append(_lost_letter(queue, raw, reason, done.delivery_count))
            else:
                headers = {codec.DELIVERIES: done.delivery_count, codec.LOST: done.lost}
                frames.append(("", queue, raw.body, codec.copy_properties(raw, headers)))
        with self.transport.errors("recycling redelivered messages"):
            await self.transport.send(link, frames)
            channel = await link.channel("consume")
            await wire.ack(channel, [codec.tag_of(raw) for _, raw, _ in recycle])
        self.transport._report_dead_letters(dead)

    async def _dead_letter_frame(
        self, link: Link, queue: str, raw: DeliveredMessage, counts: codec.Counts, reason: str
    ) -> Frame:
        await topology.declare_dead_letters(link, queue, self.transport.is_quorum(queue))
        headers = codec.rejection_headers(counts, reason)
        return (topology.DLX, queue, raw.body, codec.copy_properties(raw, headers))

    # -- settling -----------------------------------------------------------------------------
    def _split(
        self, action: str, deliveries: Sequence[Delivery]
    ) -> tuple[Link | None, list[Delivery]]:
        """This loop's link and the deliveries it still holds; warns about the others."""
        link = self.transport.current_link()
        held: list[Delivery] = []
        stale = 0
        generation = link.consume_generation() if link is not None and not link.broken else None
        for delivery in deliveries:
            owner: Any = delivery.transport_data.get("link")
            gen, tag = delivery.tag
            if owner is link and gen == generation and link is not None and tag in link.held:
                held.append(delivery)
            else:
                stale += 1
        if stale:
            logger.warning(
                "%s skipped for %d deliveries no longer held (their channel closed and RabbitMQ "
                "delivers them again, or they were settled already)",
                action,
                stale,
            )
        return link, held

    async def _ack_raw(self, link: Link, deliveries: Sequence[Delivery]) -> None:
        """``basic.ack`` the deliveries; QoS is lowered first if they leave the consumer
        needing less (see :meth:`Link.need`), so the places they free are not filled past the
        consumer's room. Not before a consuming ``get`` set QoS: RabbitMQ's limiter, switched
        on while ``basic.get`` deliveries are unacked, counts them and never their acks, and
        would block the channel's consumers for good."""
        channel = await link.channel("consume")
        tags = [delivery.tag[1] for delivery in deliveries]
        link.settling.update(tags)
        try:
            if link.prefetch:
                await link.fit_prefetch()
            await wire.ack(channel, tags)
            link.held.difference_update(tags)
        finally:
            link.settling.difference_update(tags)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        link, held = self._split("ack", deliveries)
        if link is None or not held:
            return
        with self.transport.errors("acking"):
            await self._ack_raw(link, held)

    async def requeue(self, deliveries: Sequence[Delivery], delay: float) -> None:
        link, held = self._split("requeue", deliveries)
        if link is None or not held:
            return
        with self.transport.errors("requeueing"):
            frames: list[Frame] = []
            for delivery in held:
                raw: DeliveredMessage = delivery.transport_data["raw"]
                counts: codec.Counts = delivery.transport_data["counts"]
                headers = {codec.DELIVERIES: counts.delivery_count, codec.LOST: counts.lost}
                props = codec.copy_properties(raw, headers)
                exchange = ""
                if delay > 0:
                    due = time.time() + delay
                    exchange = await self.transport.route_delayed(link, "", due, props)
                frames.append((exchange, delivery.queue, raw.body, props))
            await self.transport.send(link, frames)
            await self._ack_raw(link, held)

    async def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        link, held = self._split("reject", deliveries)
        if link is None or not held:
            return
        with self.transport.errors("dead-lettering"):
            frames = [
                await self._dead_letter_frame(
                    link,
                    d.queue,
                    d.transport_data["raw"],
                    d.transport_data["counts"],
                    reason,
                )
                for d in held
            ]
            await self.transport.send(link, frames)
            await self._ack_raw(link, held)

    async def return_buffered(self, link: Link) -> None:
        """At close: stop consuming and put back, uncounted, what was pushed but not handed out
        (RabbitMQ's own return would mark them redelivered, i.e. lost by a worker)."""
        if link.broken:
            return
        try:
            async with asyncio.timeout(RETURN_TIMEOUT):
                await link.cancel_consumers()
                pending = [(q, raw) for q, buf in link.buffers.items() for raw in buf]
                pending += link.strays
                link.buffers.clear()
                link.strays = []
                await self._put_back(link, pending)
        except Exception as exc:  # the connection is closing anyway: RabbitMQ returns them
            logger.debug("returning buffered deliveries at close: %s", exc)

    async def stop_consuming(self, link: Link, queue: str) -> None:
        """Cancel the consumer of ``queue`` and put back, uncounted, what it pushed and was
        not handed out (see :meth:`Link.stop_consuming`)."""
        pending = await link.stop_consuming(queue)
        await asyncio.shield(self._put_back(link, [(queue, raw) for raw in pending]))

    async def return_strays(self, link: Link) -> None:
        """Put back deliveries that came for a consumer already cancelled."""
        strays, link.strays = link.strays, []
        await asyncio.shield(self._put_back(link, strays))

    async def _put_back(self, link: Link, pending: list[tuple[str, DeliveredMessage]]) -> None:
        """A copy of each (its delivery count as before this delivery) to its queue, then ack
        the originals: RabbitMQ's own requeue would mark them redelivered, which reads as a
        worker lost with them. The copies queue up behind the messages waiting there."""
        if not pending:
            return
        frames: list[Frame] = []
        for queue, raw in pending:
            counts = codec.counts_of(raw)
            headers = {codec.DELIVERIES: counts.delivery_count - 1, codec.LOST: counts.lost}
            frames.append(("", queue, raw.body, codec.copy_properties(raw, headers)))
        await self.transport.send(link, frames)
        channel = await link.channel("consume")
        await wire.ack(channel, [codec.tag_of(raw) for _, raw in pending])

    # -- reading dead letters -----------------------------------------------------------------
    async def dead_letters(self, link: Link, queue: str, limit: int) -> list[DeadLetter]:
        """Read ``<queue>.dlq`` without taking anything: ``basic.get`` on a channel of its own,
        closed without acks so every message returns to its place (the newest of the first
        10,000 are shown, newest first)."""
        letters: list[DeadLetter] = []

        def read(raw: DeliveredMessage) -> bool:
            letters.append(_letter(queue, raw))
            return False

        await self._scan_dead_letters(link, queue, read)
        letters.reverse()
        return letters[: max(0, limit)]

    async def remove_dead_letters(self, link: Link, queue: str, ids: set[str]) -> int:
        """Take the letters of ``<queue>.dlq`` with these ids (``basic.get`` on a channel of its
        own, acking those); closing the channel returns every other one to its place."""
        wanted = set(ids)
        removed = 0

        def pick(raw: DeliveredMessage) -> bool:
            nonlocal removed
            letter_id = _letter(queue, raw).id
            if letter_id in wanted:
                wanted.discard(letter_id)
                removed += 1
                return True
            return False

        await self._scan_dead_letters(link, queue, pick, until=lambda: not wanted)
        return removed

    async def _scan_dead_letters(
        self,
        link: Link,
        queue: str,
        take: Callable[[DeliveredMessage], bool],
        until: Callable[[], bool] = lambda: False,
    ) -> None:
        """``basic.get`` each letter of ``<queue>.dlq`` (the first 10,000) on a channel of its
        own, acking those ``take`` says to, until ``until()``; the channel is then closed,
        which returns the others to their places (their order kept)."""
        wrapper = link.connection.channel(publisher_confirms=False)
        await wrapper.initialize()
        try:
            channel = await wrapper.get_underlay_channel()
            for _ in range(DEAD_LETTER_SCAN):
                if until():
                    break
                try:
                    raw = await channel.basic_get(f"{queue}.dlq", no_ack=False)
                except ChannelNotFoundEntity:
                    break
                if not isinstance(raw.delivery, Basic.GetOk):
                    break
                if take(raw):
                    await wire.ack(channel, [codec.tag_of(raw)])
        finally:
            with contextlib.suppress(Exception):  # closing returns them all, even on errors
                await wrapper.close()


def _lost_letter(queue: str, raw: DeliveredMessage, reason: str, count: int) -> DeadLetter:
    """A message this client dead-letters past ``max_deliveries``, as reported to the
    transport's watcher (its payload as a consumer would have received it)."""
    payload = codec.payload_of(raw, codec.message_of(raw))
    return DeadLetter(queue, payload, reason, count, time.time())


def _letter(queue: str, raw: DeliveredMessage) -> DeadLetter:
    """A dead letter as read from ``<queue>.dlq``; its id is a digest of what the copy keeps
    of it (body, message id, reason, count and time), unchanged while it waits there."""
    reason, count, failed_at = codec.dead_letter_fields(raw)
    payload = codec.payload_of(raw, codec.message_of(raw))
    digest = hashlib.sha256(raw.body)
    marks = (raw.header.properties.message_id, reason, count, repr(failed_at))
    digest.update(repr(marks).encode())
    return DeadLetter(queue, payload, reason, count, failed_at, digest.hexdigest()[:24])
