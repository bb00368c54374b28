"""One event loop's connection to RabbitMQ: its channels, its consumers, and what they delivered.

An asyncio connection belongs to the loop that opened it, and one transport may be used from
several loops (a worker's, the producer's portal, one ``asyncio.run`` per test), so the transport
keeps one :class:`Link` per loop. A link has three channels, each with one job, because a channel
error in AMQP closes the whole channel and everything it holds:

* ``control``: declarations, passive checks, ``size``, ``purge``. A ``NOT_FOUND`` or
  ``PRECONDITION_FAILED`` here (routine: ``size`` of a missing queue) costs only this channel,
  which is reopened on next use;
* ``publish``: publisher confirms, ``mandatory`` publishes (returns tell unroutable messages);
* ``consume``: ``basic.consume`` per queue and the acks of what it delivered. Its *generation*
  number is part of every delivery tag, so a settle for a delivery of a closed channel (a
  reconnect happened meanwhile; RabbitMQ has already put the message back) is recognised as
  stale and skipped instead of acking an unrelated message under a reused tag.

Deliveries are pushed into per-queue buffers by the consumer callback (aiormq calls it from its
reader in arrival order) and taken by ``get``. QoS is channel-wide (``global``) and follows
:meth:`Link.need`, the most deliveries the worker may hold unacked: its window less its
running tasks acked early. An early ack (the task runs on, still in the worker's window, no
longer unacked here) lowers QoS *before* its ``basic.ack`` frees a place; a raise waits until
RabbitMQ can push nothing more (:meth:`Link.fit_prefetch`). So RabbitMQ never pushes a message
the worker has no room for, and a busy worker, whose tasks start and end together, changes QoS
seldom: a ``basic.qos`` frame, written ahead of the acks, whose reply nobody waits for.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from aio_pika.abc import AbstractConnection
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp.commands import Basic

from celeriac.errors import TransportError
from celeriac.transports.amqp import wire

logger = logging.getLogger("celeriac.transports.amqp")

#: One message to publish: exchange, routing key, body, properties.
Frame = tuple[str, str, bytes, Basic.Properties]


class Link:
    """The connection of one loop, its three channels and the consumer state (see module doc)."""

    def __init__(
        self,
        connection: AbstractConnection,
        generation: int,
        confirms: bool = True,
        prefetch_count: int | None = None,
    ) -> None:
        self.connection = connection
        self.confirms = confirms
        #: A fixed QoS (the ``prefetch_count`` option): set once, never followed.
        self.fixed_prefetch = prefetch_count
        self.generation = generation
        self._channels: dict[str, AbstractChannel] = {}
        self._wrappers: dict[str, Any] = {}  # aio-pika's channel objects, kept alive
        self._opening: dict[str, asyncio.Lock] = {}
        self.consumers: dict[str, str] = {}  # queue -> consumer tag
        self.buffers: dict[str, deque[DeliveredMessage]] = {}
        self.arrived = asyncio.Event()
        self.prefetch = 0
        self.held: set[int] = set()  # delivery tags handed out and not settled
        #: held tags whose settle is being written (they count as free: see need())
        self.settling: set[int] = set()
        #: the room the consumer asked for and has not been given yet (see need())
        self.asked = 0
        #: the consumer's capacity now, when it says (Transport.watch_capacity; see need())
        self.capacity: Callable[[], int] | None = None
        self._qos = asyncio.Lock()
        #: deliveries of a consumer that was cancelled, found after its buffer went: each
        #: ``get`` gives them back (see stop_consuming)
        self.strays: list[tuple[str, DeliveredMessage]] = []
        self.declared: dict[str, float] = {}  # declaration key -> monotonic time
        self.known_exchanges: set[str] = {""}
        self.rotation = 0
        self.closing = False
        self.lost = False
        self.keeper: Any = None  # the async generator that closes this link with its loop
        #: The channel transient publishes last went out on (see amqp.transient.publish).
        self.transient_channel: AbstractChannel | None = None

    @property
    def broken(self) -> bool:
        """True once the connection closed, by us or by the broker (aio-pika's ``is_closed``
        only turns true on a local close, so the close callback sets ``lost``)."""
        return self.closing or self.lost or self.connection.is_closed

    async def channel(self, role: str) -> AbstractChannel:
        """The open channel for ``role`` (control, publish, consume), reopened if it closed."""
        found = self._channels.get(role)
        if found is not None and not found.is_closed:
            return found
        lock = self._opening.setdefault(role, asyncio.Lock())
        async with lock:
            found = self._channels.get(role)
            if found is not None and not found.is_closed:
                return found
            if role == "consume" and found is not None:
                self._consume_channel_lost()
            wrapper = self.connection.channel(
                publisher_confirms=role == "publish" and self.confirms, on_return_raises=False
            )
            await wrapper.initialize()
            channel = await wrapper.get_underlay_channel()
            self._channels[role] = channel
            self._wrappers[role] = wrapper
            if role == "consume" and self.prefetch:
                await channel.basic_qos(prefetch_count=self.prefetch, global_=True)
            return channel

    def _consume_channel_lost(self) -> None:
        """The consume channel closed: its deliveries went back to RabbitMQ; start afresh."""
        self.generation += 1
        self.consumers.clear()
        self.buffers.clear()
        self.held.clear()
        self.settling.clear()
        self.strays.clear()

    def consume_generation(self) -> int:
        """The generation of the current consume channel (raised when it was lost)."""
        found = self._channels.get("consume")
        if found is not None and found.is_closed:
            self._consume_channel_lost()
            self._channels.pop("consume", None)
        return self.generation

    def need(self) -> int:
        """The QoS the consumer needs now: the most deliveries it may hold unacked.

        The worker's window counts a running task whose message was acked early; RabbitMQ's
        count does not. So QoS is the worker's window less its running tasks acked early, as
        the worker says (:attr:`capacity`); for a caller that does not say, what it holds
        unacked (a delivery whose ack is being written no longer counts) plus the room its last
        ``get`` asked for and was not given. Never below one: AMQP has no QoS 0, so a worker
        whose window is all running tasks may find one message pushed ahead of its next fetch.
        """
        if self.capacity is not None:
            wanted = self.capacity()
        else:
            wanted = len(self.held) - len(self.settling) + self.asked
        return max(1, min(wanted, 65535))

    def saturated(self) -> bool:
        """Whether RabbitMQ may push no more now: unacked deliveries (handed out, or buffered
        here) fill the QoS."""
        buffered = sum(len(buffer) for buffer in self.buffers.values()) + len(self.strays)
        return len(self.held) + buffered >= self.prefetch

    async def fit_prefetch(self, grow: bool = False, idle: bool = False) -> None:
        """Lower QoS to :meth:`need` when it is above (at once: RabbitMQ would push past the
        worker's room), or, with ``grow``, raise it when RabbitMQ can push nothing more and the
        worker has room (a raise that can wait for that saves a frame each time a task starts
        and ends); with ``idle`` (a fetch found nothing for its whole wait), raise it anyway,
        in case RabbitMQ counts a delivery this link does not. Also sets it the first time, or
        to the fixed ``prefetch_count``.

        One ``basic.qos`` frame when it changes, written at once, its reply not waited for
        (:func:`~celeriac.transports.amqp.wire.qos`). Serialised, and the figure is taken
        inside the lock, so two callers cannot leave an older figure in place."""
        async with self._qos:
            count = self.fixed_prefetch or self.need()
            if count == self.prefetch:
                return
            waits = not (idle or (grow and self.saturated()))
            if self.prefetch and count > self.prefetch and waits:
                return  # RabbitMQ can still push: the raise can wait
            channel = await self.channel("consume")
            await wire.qos(channel, count)
            self.prefetch = count

    async def raise_prefetch(self, count: int) -> None:
        """Raise the channel-wide QoS to ``count`` if it is lower (one round trip when it is):
        for a link with a fixed need, such as beat's leader (one token at a time). A worker's
        consuming link follows its need with :meth:`fit_prefetch` instead."""
        count = max(1, min(count, 65535))
        if count <= self.prefetch:
            return
        channel = await self.channel("consume")
        await channel.basic_qos(prefetch_count=count, global_=True)
        self.prefetch = count

    async def start_consuming(self, queue: str) -> None:
        """``basic.consume`` on ``queue``; deliveries land in its buffer (once the consumer is
        cancelled and its buffer gone, among the strays)."""
        channel = await self.channel("consume")
        buffer = self.buffers.setdefault(queue, deque())
        arrived = self.arrived

        async def on_message(message: DeliveredMessage) -> None:
            if self.buffers.get(queue) is buffer:
                buffer.append(message)
            else:
                self.strays.append((queue, message))
            arrived.set()

        ok = await channel.basic_consume(queue, on_message, no_ack=False)
        tag = ok.consumer_tag
        if tag is None:  # pragma: no cover - the broker always names its consumer
            raise RuntimeError("basic.consume-ok without a consumer tag")
        self.consumers[queue] = tag

    async def send(self, frames: Sequence[Frame], timeout: float) -> list[int]:
        """Publish ``frames`` (``mandatory``) and await all their confirms together: a few writes
        per batch (:mod:`.amqp_wire`), one wait, both within ``timeout``. 1 for each message
        routed, 0 for each returned. The deadline is a scope of this task (``asyncio.timeout``),
        not ``wait_for``, which would run the write in a task of its own: an event-loop turn
        more before the first byte goes out, on every sync ``.delay()``'s path."""
        channel = await self.channel("publish")
        if not self.confirms:  # confirm_publish=False: written, not confirmed; counted as routed
            await wire.publish(channel, frames, confirm=False)
            return [1] * len(frames)
        async with asyncio.timeout(timeout):
            if wire.batching(channel):
                sent = await wire.publish(channel, frames)
                results = await asyncio.gather(*sent)
            else:
                results = await asyncio.gather(
                    *(
                        channel.basic_publish(
                            body, exchange=exchange, routing_key=key, properties=p, mandatory=True
                        )
                        for exchange, key, body, p in frames
                    )
                )
        return _counts(results)

    def send_now(
        self,
        frames: Sequence[Frame],
        timeout: float,
        failure: Callable[[BaseException], BaseException],
    ) -> asyncio.Future[list[int]] | None:
        """:meth:`send` from a loop callback: the frames are queued for the writer before this
        returns (:func:`~celeriac.transports.amqp.wire.publish_now`), and the future gives
        their counts once all are confirmed, or ``failure(error)`` (a confirm that did not
        come within ``timeout`` is a :class:`TimeoutError`); ``None`` when that cannot be done
        now (no open publish channel with confirms, or what ``publish_now`` refuses):
        :meth:`send` instead. Callbacks, not a task: the confirm of a lone ``.delay()`` is
        settled in the reader's own turn."""
        channel = self._channels.get("publish")
        if not self.confirms or channel is None or channel.is_closed:
            return None
        sent = wire.publish_now(channel, frames)
        if sent is None:
            return None
        return _confirmation(sent, timeout, failure)

    def take(self, queues: list[str], max_count: int) -> list[tuple[str, DeliveredMessage]]:
        """Up to ``max_count`` buffered deliveries, taken round-robin across ``queues``."""
        taken: list[tuple[str, DeliveredMessage]] = []
        if not queues:
            return taken
        start = self.rotation % len(queues)
        self.rotation += 1
        order = queues[start:] + queues[:start]
        buffers = [(q, self.buffers.get(q)) for q in order]
        live = [(q, b) for q, b in buffers if b]
        while live and len(taken) < max_count:
            for queue, buffer in list(live):
                if not buffer:
                    live.remove((queue, buffer))
                    continue
                taken.append((queue, buffer.popleft()))
                if len(taken) >= max_count:
                    break
        return taken

    def put_back(self, taken: list[tuple[str, DeliveredMessage]]) -> None:
        """Return deliveries to the front of their buffers (a cancelled ``get``)."""
        for queue, message in reversed(taken):
            self.buffers.setdefault(queue, deque()).appendleft(message)
        if taken:
            self.arrived.set()

    def buffered(self) -> list[DeliveredMessage]:
        """Every delivery received and not handed out (to return them at close)."""
        return [message for buffer in self.buffers.values() for message in buffer]

    async def stop_consuming(self, queue: str) -> list[DeliveredMessage]:
        """Cancel the consumer of ``queue``; returns what it delivered that nobody took (still
        unacked: the caller gives it back or, deleting the queue, lets it go).

        RabbitMQ sends ``basic.cancel-ok`` after every delivery of that consumer, and aiormq
        starts each delivery's callback as its frame is read, so they have run when this
        resumes; a delivery that comes later all the same becomes a stray, which ``get``
        gives back."""
        tag = self.consumers.pop(queue, None)
        channel = self._channels.get("consume")
        if tag is not None and channel is not None and not channel.is_closed:
            await channel.basic_cancel(tag)
        pending = list(self.buffers.pop(queue, None) or ())
        pending += [raw for name, raw in self.strays if name == queue]
        self.strays = [(name, raw) for name, raw in self.strays if name != queue]
        return pending

    async def cancel_consumers(self) -> None:
        """Stop deliveries (before returning what is buffered)."""
        channel = self._channels.get("consume")
        if channel is None or channel.is_closed:
            return
        for tag in list(self.consumers.values()):
            await channel.basic_cancel(tag)
        self.consumers.clear()

    async def close(self, timeout: float = 5.0) -> None:
        """Close the connection; unsettled deliveries go back to their queues."""
        self.closing = True
        try:
            await asyncio.wait_for(self.connection.close(), timeout)
        except (TimeoutError, Exception) as exc:  # closing a dead link
            logger.debug("closing the AMQP connection: %s", exc)


def _confirmation(
    sent: list[asyncio.Future[Any]],
    timeout: float,
    failure: Callable[[BaseException], BaseException],
) -> asyncio.Future[list[int]]:
    """One future for the confirms of ``sent`` (see :meth:`Link.send_now`)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[int]] = loop.create_future()
    left = [len(sent)]

    def expire() -> None:
        if not done.done():
            done.set_exception(failure(TimeoutError(f"no confirm within {timeout:g} s")))

    timer = loop.call_later(timeout, expire)

    def confirmed(_: asyncio.Future[Any]) -> None:
        left[0] -= 1
        if left[0] or done.done():
            return
        timer.cancel()
        try:
            counts = _counts([future.result() for future in sent])
        except BaseException as exc:  # a closed channel, a nack
            done.set_exception(failure(exc))
        else:
            done.set_result(counts)

    for future in sent:
        future.add_done_callback(confirmed)
    return done


def _counts(results: Sequence[Any]) -> list[int]:
    """1 per message confirmed, 0 per returned (unroutable); a ``basic.nack`` is an error."""
    counts: list[int] = []
    for result in results:
        if isinstance(result, Basic.Nack):
            raise TransportError("RabbitMQ refused a message (basic.nack)")
        counts.append(1 if isinstance(result, Basic.Ack) else 0)
    return counts


def on_close(link: Link) -> Callable[..., Any]:
    """A connection close callback: marks the link lost and wakes a ``get`` waiting on it."""

    def wake(*_: Any) -> None:
        link.lost = True
        link.arrived.set()

    return wake
