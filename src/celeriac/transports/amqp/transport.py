"""The RabbitMQ broker (AMQP 0-9-1, on aio-pika/aiormq): RabbitMQ's own exchanges, no emulation.

URLs: ``amqp://user:password@host:5672/vhost``, ``amqps://`` and ``;``-separated failover lists
(see :mod:`celeriac.transports.amqp.url` for TLS, heartbeat and timeout options).

Options (``broker_transport_options``), besides the connection options: ``max_deliveries``
(10); ``queue_type`` (``"classic"`` or ``"quorum"``: durable queues are declared as quorum queues,
which RabbitMQ 3.10 replicates but gives no priorities); ``prefetch_count`` (fixed QoS; by default
QoS follows the worker's prefetch window less its running tasks acked early, so that RabbitMQ
never pushes a message the worker has no room for: :meth:`Link.need`);
``confirm_timeout`` (30 s); ``max_priority`` (9; 0 declares queues without priorities, as
Celery does, so Celery workers can share them); ``confirm_publish`` (True; False sends without
waiting for the broker, as Celery does by default: several times the sync send rate, but a
message lost in a broker crash goes unnoticed, and every count is 1); ``confirm_window`` (256:
how many messages sent from sync code, ``.delay()`` in a script or a view, may await their
confirm in the background, :mod:`celeriac.app.pipeline`; 0: each sync send waits for its own
confirm); ``connect_attempts``
(1 round over the URLs per call: the worker's fetch loop and the producer's retry policy do the
retrying); ``transient_retention`` (60 s: the ``x-message-ttl`` of a listener's queue).
``lease_seconds`` does not apply.

**Transient fan-out** (events, control requests) uses exchanges of the caller's type and an
exclusive, auto-delete queue per listener: :mod:`celeriac.transports.amqp.transient`.

**Topology.** Exchanges, queues and bindings are declared on RabbitMQ (headers exchanges are
RabbitMQ's own, bound with the bindings' arguments); queues are durable unless they say
otherwise, with ``x-max-priority`` = the queue's ``max_priority`` (0-9 mean the same in
celeriac and AMQP, so no level is wasted), or ``x-queue-type: quorum``. An ``auto_delete`` queue
(a worker's control queue) is also *exclusive*: it goes when its connection does, even if no
consumer ever started. A queue that exists with other arguments (declared by a Celery worker,
say) is used as it is, with a warning. Each instance declares again, on a new connection, what
it declared before.

**Publishing** is ``mandatory`` with publisher confirms: ``publish_batch`` writes the whole batch
then awaits every confirm together. RabbitMQ does not say how many queues a message reached, so
a count is 1 for routed and 0 for returned (unroutable). Exchanges named in a batch are checked
(passive declare, once per connection) before anything is sent, so a batch to a missing exchange
is refused whole. Delays go to TTL queues (:mod:`celeriac.transports.amqp.delay`); a delayed
message counts 1 once it is in its delay queue. Message layout: :mod:`~.amqp_codec`.

**Consuming.** ``get`` starts a ``basic.consume`` per queue on first use (RabbitMQ round-robins
between queues and consumers) and takes from what was pushed; ``get(timeout=0)`` ("what is ready
now") also pulls with ``basic.get``. A cancelled ``get`` puts back what it took.
``stop_consuming`` cancels a queue's ``basic.consume`` and puts back, uncounted, what RabbitMQ
pushed for it and no ``get`` took. ``extend`` does nothing: RabbitMQ has no lease, a delivery
is held until settled or its channel closes, but it closes a channel that holds one longer
than ``consumer_timeout`` (30 minutes by default).

**Settling.** ``ack`` is ``basic.ack``. ``requeue`` publishes a copy (confirmed) with the count
raised, to the queue itself or through a delay queue, then acks: RabbitMQ's own requeue would mark
it redelivered, which reads as a lost delivery. ``reject`` publishes a copy with the reason to
``<queue>.dlq`` through the ``celeriac.dlx`` exchange, then acks. A delivery RabbitMQ redelivers
(its channel died holding it: a worker was killed) is not handed out: a copy with
``x-celeriac-lost`` raised is published instead, or, past ``max_deliveries`` lost deliveries, it
is dead-lettered with the reason. Requeues by a living worker (warm shutdown, eta, rate limits)
raise ``delivery_count`` but are not failures and never dead-letter a message.

**Faults.** A closed connection is reopened on next use (each loop has its own,
:mod:`~.amqp_link`); settles for deliveries of a closed channel are skipped with a warning, as
RabbitMQ has put those messages back. Every client error surfaces as
:class:`~celeriac.errors.TransportError` without the password. Sync callers go through the
producer's portal loop; :meth:`AMQPTransport.publish_sync` uses a private one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from typing import Any, ClassVar

from aiormq.exceptions import AMQPError, ChannelNotFoundEntity
from pamqp.commands import Basic

from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.protocol.message import Message
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.amqp import codec, delay, topology, transient, wire
from celeriac.transports.amqp.link import Frame, Link, on_close
from celeriac.transports.amqp.settle import Settler
from celeriac.transports.amqp.url import connect_first, parse_amqp_urls
from celeriac.transports.base import (
    DeadLetter,
    Delivery,
    Listener,
    Outgoing,
    Transport,
    confirm_window,
)
from celeriac.transports.transient import DEFAULT_BUFFER

logger = logging.getLogger("celeriac.transports.amqp")

_CLIENT_ERRORS = (AMQPError, ConnectionError, OSError, asyncio.TimeoutError, RuntimeError)
Declare = Callable[[Link], Awaitable[None]]


class AMQPTransport(Transport):
    """The RabbitMQ broker (see the module docstring for semantics and options)."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps", "pyamqp")
    #: RabbitMQ pushes only while fewer than QoS deliveries are unacked: acks go at once.
    early_ack_delay: ClassVar[float] = 0.0

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672//", **options: Any) -> None:
        super().__init__(url, **options)
        self.targets = parse_amqp_urls(url, options)
        self.queue_type = str(options.get("queue_type", "classic")).lower()
        if self.queue_type not in ("classic", "quorum"):
            raise ImproperlyConfigured(
                f"broker_transport_options 'queue_type' must be classic or quorum, "
                f"not {self.queue_type!r}"
            )
        try:
            fixed = options.get("prefetch_count")
            self.prefetch_count = int(fixed) if fixed is not None else None
            self.confirm_timeout = float(options.get("confirm_timeout", 30.0))
            self.connect_attempts = max(1, int(options.get("connect_attempts", 1)))
            self.max_priority = int(options.get("max_priority", 9))
            self.confirm_publish = str(options.get("confirm_publish", True)).lower() not in (
                "0",
                "false",
                "no",
                "off",
            )
            self.transient_retention = float(options.get("transient_retention", 60.0))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"broker_transport_options: {exc}") from None
        self.sync_publish_window = confirm_window(options)
        if self.transient_retention <= 0:
            raise ImproperlyConfigured("broker_transport_options 'transient_retention' must be > 0")
        self._listeners: set[transient.AMQPListener] = set()
        self._lock = threading.Lock()
        self._links: dict[asyncio.AbstractEventLoop, Link] = {}
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._serials = itertools.count(1)
        #: What this instance declared, in order, to declare again on a new connection.
        self._declarations: dict[str, Declare] = {}
        self._queues: dict[str, Queue] = {}
        self._delay_names: set[str] = set()
        self._portal: Any = None
        self.settler = Settler(self)
        self._capacity: Callable[[], int] | None = None

    # -- connections --------------------------------------------------------------------------
    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn a client error into a TransportError naming ``doing`` (never the password)."""
        try:
            yield
        except (TransportError, ImproperlyConfigured):
            raise
        except _CLIENT_ERRORS as exc:
            text = f"{type(exc).__name__}: {exc}"
            for target in self.targets:
                text = target.scrub(text)
            where = self.targets[0].display
            raise TransportError(f"RabbitMQ {where}: {doing} failed: {text}") from None

    async def link(self) -> Link:
        """This loop's link, (re)connected and with this instance's topology declared."""
        loop = asyncio.get_running_loop()
        found = self._links.get(loop)
        if found is not None and not found.broken:
            return found
        with self._lock:
            for gone in [other for other in self._opening if other.is_closed()]:
                del self._opening[gone]
            opening = self._opening.setdefault(loop, asyncio.Lock())
        async with opening:
            found = self._links.get(loop)
            if found is not None and not found.broken:
                return found
            if found is not None and not found.closing:  # logged once, not once per attempt
                logger.warning("RabbitMQ connection lost; reconnecting to %s", self._where())
                await found.close(timeout=1.0)
            connection = await connect_first(self.targets, attempts=self.connect_attempts)
            link = Link(
                connection,
                next(self._serials) * 1_000_000,
                self.confirm_publish,
                self.prefetch_count,
            )
            link.capacity = self._capacity
            connection.close_callbacks.add(on_close(link))
            try:
                with self.errors("declaring the topology again"):
                    for declare in list(self._declarations.values()):
                        await declare(link)
            except BaseException:
                await link.close(timeout=1.0)
                raise
            with self._lock:
                for old in [other for other in self._links if other.is_closed()]:
                    del self._links[old]
                self._links[loop] = link
            keeper = self._close_with_loop(loop, link)
            await anext(keeper)
            link.keeper = keeper
            return link

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, link: Link
    ) -> AsyncGenerator[None, None]:
        """Closes the link when ``asyncio.run`` finalizes this generator at the loop's end."""
        try:
            yield
        finally:
            with self._lock:
                if self._links.get(loop) is link:
                    del self._links[loop]
            await link.close(timeout=2.0)

    def current_link(self) -> Link | None:
        """The running loop's link, if it has one (settles never open a new connection)."""
        return self._links.get(asyncio.get_running_loop())

    def is_quorum(self, queue: str) -> bool:
        """Whether this instance declared ``queue`` as a quorum queue."""
        known = self._queues.get(queue)
        return known is not None and self.queue_arguments(known).get("x-queue-type") == "quorum"

    def _where(self) -> str:
        return ";".join(target.display for target in self.targets)

    async def connect(self) -> None:
        await self.link()

    async def close(self) -> None:
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):
                await listener.close()
        loop = asyncio.get_running_loop()
        with self._lock:
            link = self._links.pop(loop, None)
            stale = [other for other in self._links if other.is_closed()]
            for old in stale:
                del self._links[old]
        if link is not None:
            await self.settler.return_buffered(link)
            await link.close()
        portal, self._portal = self._portal, None
        if portal is not None:
            with contextlib.suppress(Exception):
                portal.call(self.close(), timeout=5)
            portal.close()

    # -- topology -----------------------------------------------------------------------------
    async def _declare(self, key: str, declare: Declare, doing: str) -> None:
        link = await self.link()
        with self.errors(doing):
            await declare(link)
        self._declarations[key] = declare

    async def declare_exchange(self, exchange: Exchange) -> None:
        if not exchange.name:
            return

        async def declare(link: Link) -> None:
            channel = await link.channel("control")
            await channel.exchange_declare(
                exchange.name, exchange_type=exchange.type, durable=exchange.durable
            )
            link.known_exchanges.add(exchange.name)

        await self._declare(f"exchange:{exchange.name}", declare, f"declaring {exchange.name!r}")

    def queue_arguments(self, queue: Queue) -> dict[str, Any]:
        return topology.queue_arguments(queue, self.queue_type, self.max_priority)

    async def declare_queue(self, queue: Queue) -> None:
        for exchange in queue.exchanges():
            await self.declare_exchange(exchange)
        quorum = self.queue_arguments(queue).get("x-queue-type") == "quorum"

        async def declare(link: Link) -> None:
            await topology.declare_queue(link, queue, self.queue_arguments(queue))
            if queue.durable and not queue.auto_delete and not queue.no_declare:
                await topology.declare_dead_letters(link, queue.name, quorum)
            for binding in queue.all_bindings():
                await topology.bind_queue(link, binding)

        self._queues[queue.name] = queue
        await self._declare(f"queue:{queue.name}", declare, f"declaring queue {queue.name!r}")

    async def bind(self, binding: Binding) -> None:
        async def declare(link: Link) -> None:
            await topology.bind_queue(link, binding)

        key = topology.binding_key(binding)
        await self._declare(key, declare, f"binding {binding.queue!r} to {binding.exchange!r}")

    async def unbind(self, binding: Binding) -> None:
        self._declarations.pop(topology.binding_key(binding), None)
        link = await self.link()
        with (
            self.errors(f"unbinding {binding.queue!r}"),
            contextlib.suppress(ChannelNotFoundEntity),
        ):
            await topology.unbind_queue(link, binding)

    async def delete_queue(self, name: str) -> None:
        self._declarations.pop(f"queue:{name}", None)
        for key in [k for k in self._declarations if k.startswith("bind\x1f")]:
            if key.split("\x1f")[2] == name:
                del self._declarations[key]
        self._queues.pop(name, None)
        link = await self.link()
        for forget in (f"dlq:{name}", f"exists:{name}"):
            link.declared.pop(forget, None)
        with self.errors(f"deleting queue {name!r}"):
            await link.stop_consuming(name)
            for victim in (name, f"{name}.dlq"):
                with contextlib.suppress(ChannelNotFoundEntity):
                    channel = await link.channel("control")
                    await channel.queue_delete(victim)

    def declared_names(self) -> tuple[set[str], set[str]]:
        """The queues and exchanges this instance declared (for tests and tools to clean up)."""
        queues = {k.split(":", 1)[1] for k in self._declarations if k.startswith("queue:")}
        queues |= {f"{q}.dlq" for q in queues}
        exchanges = {k.split(":", 1)[1] for k in self._declarations if k.startswith("exchange:")}
        return queues | self._delay_names, exchanges | self._delay_names

    # -- producing ----------------------------------------------------------------------------
    async def route_delayed(
        self, link: Link, exchange: str, due_at: float, props: Basic.Properties
    ) -> str:
        """The delay exchange for a message due at ``due_at`` (see :mod:`.amqp_delay`)."""
        name = await delay.route_delayed(link, exchange, due_at, props)
        self._delay_names.add(name)
        return name

    async def send(self, link: Link, frames: Sequence[Frame]) -> list[int]:
        """Publish frames, awaiting every confirm: 1 per message routed, 0 per returned."""
        return await link.send(frames, self.confirm_timeout)

    async def publish_batch(self, items: Sequence[Outgoing]) -> list[int]:
        if not items:
            return []
        link = await self.link()
        with self.errors("publishing"):
            await topology.check_exchanges(link, (item.exchange for item in items))
            now = time.time()
            frames: list[Frame] = []
            delayed: list[int] = []
            for item in items:
                props = codec.properties_for(item.message)
                exchange = item.exchange
                if item.due_at is not None and (item.due_at - now) * 1000 > delay.IMMEDIATE_MS:
                    exchange = await self.route_delayed(link, exchange, item.due_at, props)
                    delayed.append(len(frames))
                frames.append((exchange, item.routing_key, item.message.body, props))
            counts = await self.send(link, frames)
            lost = [i for i in delayed if counts[i] == 0]
            if lost:  # a delay queue expired since this link declared it: declare, resend
                for i in lost:
                    link.declared.pop(frames[i][0], None)
                for item_index in lost:
                    item = items[item_index]
                    assert item.due_at is not None
                    name = await self.route_delayed(
                        link, item.exchange, item.due_at, frames[item_index][3]
                    )
                    frames[item_index] = (name, *frames[item_index][1:])
                again = await self.send(link, [frames[i] for i in lost])
                for i, count in zip(lost, again, strict=True):
                    counts[i] = count
        return counts

    def publish_now(self, items: Sequence[Outgoing]) -> asyncio.Future[list[int]] | None:
        """Write ``items`` from a callback on the loop, awaiting nothing (see
        :meth:`Transport.publish_now`): when this loop's link is up, each message goes to an
        exchange it has checked and none is delayed, they are queued for the connection's
        writer at once (:meth:`Link.send_now`), a loop turn or two sooner than a task that
        awaits :meth:`publish_batch` would write them."""
        link = self._links.get(asyncio.get_running_loop())
        if link is None or link.broken or len(items) > wire.CHUNK:
            return None  # a batch of many chunks: publish_batch's writes and awaited drains
        now = time.time()
        frames: list[Frame] = []
        for item in items:
            if item.exchange not in link.known_exchanges:
                return None
            if item.due_at is not None and (item.due_at - now) * 1000 > delay.IMMEDIATE_MS:
                return None
            props = codec.properties_for(item.message)
            frames.append((item.exchange, item.routing_key, item.message.body, props))
        return link.send_now(frames, self.confirm_timeout, self._publish_failure)

    def _publish_failure(self, exc: BaseException) -> BaseException:
        """What :meth:`errors` makes of ``exc`` while publishing (a TransportError without the
        password, for a client error)."""
        try:
            with self.errors("publishing"):
                raise exc
        except BaseException as converted:
            return converted

    def publish_sync(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish from sync code on this instance's private portal loop (thread-safe).

        Apps do not come here: the producer runs AMQP publishes on its own portal loop.
        """
        from celeriac.utils.portal import Portal

        with self._lock:
            if self._portal is None:
                self._portal = Portal("celeriac-amqp")
            portal = self._portal
        result: list[int] = portal.call(self.publish_batch(items))
        return result

    # -- transient fan-out --------------------------------------------------------------------
    async def publish_transient(
        self, exchange: Exchange, routing_key: str, messages: Sequence[Message]
    ) -> None:
        if messages:
            await transient.publish(self, exchange, routing_key, messages)

    def listen(
        self, exchange: Exchange, patterns: Sequence[str] = ("#",), *, buffer: int = DEFAULT_BUFFER
    ) -> Listener:
        return transient.AMQPListener(self, exchange, patterns, buffer)

    def opened(self, listener: transient.AMQPListener) -> None:
        """A listener of this instance opened (it is closed with the transport)."""
        self._listeners.add(listener)

    def closed(self, listener: transient.AMQPListener) -> None:
        self._listeners.discard(listener)

    # -- consuming ----------------------------------------------------------------------------
    async def get(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        link = await self.link()
        names = list(dict.fromkeys(queues))
        deadline = time.monotonic() + max(0.0, timeout)
        with self.errors("fetching"):
            link.consume_generation()
            if timeout <= 0:
                return await self.settler.poll(link, names, max_count)
            if link.strays:
                await self.settler.return_strays(link)
            link.asked = max_count
            # QoS first: a consume channel with none is pushed the whole backlog at once. Not
            # for quorum queues: RabbitMQ refuses them a consumer on a channel with global QoS
            # (set after their basic.consume, it is accepted)
            quorum = any(self.is_quorum(name) for name in names)
            if not quorum:
                await link.fit_prefetch(grow=not link.prefetch)
            for name in names:
                if name not in link.consumers and await self.settler.exists(link, name):
                    await link.start_consuming(name)
            if quorum:
                await link.fit_prefetch(grow=not link.prefetch)
        while True:
            taken = link.take(names, max_count)
            if taken:
                deliveries = await self.settler.admit(link, taken)
                if deliveries:
                    # the room not filled stays asked for: RabbitMQ may push that much ahead
                    link.asked = max(0, max_count - len(deliveries))
                    return deliveries
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not link.broken:
                    with self.errors("fetching"):
                        await link.fit_prefetch(idle=True)
                return []
            if link.broken:
                raise TransportError(f"RabbitMQ {self._where()}: the connection closed")
            with self.errors("fetching"):
                if link.strays:
                    await self.settler.return_strays(link)
                await link.fit_prefetch(grow=True)  # nothing here: let RabbitMQ push more
            link.arrived.clear()
            # a deadline on this task, not wait_for's task around the wait: a delivery wakes
            # this task in one event-loop turn instead of three
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await link.arrived.wait()

    def watch_capacity(self, capacity: Callable[[], int]) -> None:
        """QoS follows the consumer's capacity as it says (see :meth:`Link.need`), on every link
        of this instance, present and future."""
        self._capacity = capacity
        for link in list(self._links.values()):
            link.capacity = capacity

    async def stop_consuming(self, queue: str) -> None:
        """Cancel this loop's ``basic.consume`` on ``queue`` and put back, uncounted, what
        RabbitMQ pushed to it and no ``get`` took (held unacked in the link's buffer, it would
        wait there for a worker that no longer asks for it)."""
        link = self.current_link()
        if link is None or link.broken:
            return  # a closed channel's deliveries went back to RabbitMQ already
        with self.errors(f"stopping the consumer of {queue!r}"):
            link.consume_generation()
            await self.settler.stop_consuming(link, queue)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self.settler.ack(deliveries)

    async def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        await self.settler.requeue(deliveries, delay)

    async def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        await self.settler.reject(deliveries, reason)

    async def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None:
        """Nothing to do: RabbitMQ holds a delivery until it is settled or its channel closes."""

    # -- inspection ---------------------------------------------------------------------------
    async def size(self, queue: str) -> int:
        link = await self.link()
        with self.errors(f"sizing {queue!r}"):
            channel = await link.channel("control")
            try:
                ok = await channel.queue_declare(queue, passive=True)
            except ChannelNotFoundEntity:
                return 0
        return int(ok.message_count or 0)

    async def purge(self, queue: str) -> int:
        link = await self.link()
        with self.errors(f"purging {queue!r}"):
            channel = await link.channel("control")
            try:
                ok = await channel.queue_purge(queue)
            except ChannelNotFoundEntity:
                return 0
        return int(ok.message_count or 0)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        link = await self.link()
        with self.errors(f"reading the dead letters of {queue!r}"):
            return await self.settler.dead_letters(link, queue, limit)

    async def remove_dead_letters(self, queue: str, letters: Sequence[DeadLetter]) -> int:
        """Take these letters out of ``<queue>.dlq``: each one's id is a digest of its copy
        there (see :mod:`~celeriac.transports.amqp.settle`), found among the first 10,000."""
        ids = {letter.id for letter in letters if letter.id is not None}
        if not ids:
            return 0
        link = await self.link()
        with self.errors(f"removing dead letters of {queue!r}"):
            return await self.settler.remove_dead_letters(link, queue, ids)

    async def oldest_message_age(self, queue: str) -> float | None:
        """``None``: AMQP 0-9-1 gives a queue's depth, not its head's age. RabbitMQ's management
        API has one (``head_message_timestamp``, from a ``timestamp`` property Celery does not
        set), which this transport does not use; peeking with ``basic.get`` would mark the
        head redelivered."""
        return None
