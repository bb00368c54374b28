"""The transport contract: what every broker (memory, SQLite, Redis, AMQP) must do.

The contract is small and explicit about acknowledgement:

* **declare** exchanges, queues and bindings (idempotent; stored *on the broker*, so that every
  producer and worker process sees the same topology);
* **publish** one message or a batch to an exchange with a routing key; a ``due_at`` time keeps the
  message on the broker, invisible, until it is due (countdown, eta and retry backoff never wait
  in a worker's memory);
* **get** up to ``max_count`` deliveries from some queues, waiting up to ``timeout`` seconds for
  the first (the worker asks for exactly as many as its prefetch window has room for);
* each delivery is **leased**: invisible to other consumers until it is acked, requeued, rejected,
  or its lease expires (the consumer died), in which case it is delivered again with its
  ``delivery_count`` raised. ``extend`` renews leases while long tasks run. Past
  ``max_deliveries`` a message goes to the dead-letter queue instead of being delivered again;
* **ack / requeue / reject** take sequences so that a worker settles a whole batch in one round
  trip; ``reject`` dead-letters the message with a reason a person can read;
* **purge**, **size**, **dead_letters** for the CLI and for tests.

Optional methods have a documented default in this class, so that callers (the worker, the
dashboard) need not ask whether a broker has them: **stop_consuming** (give back what was
prefetched for a queue the worker stops consuming), **watch_capacity** (what a broker that
pushes may push), **watch_dead_letters** (hear of the messages the transport dead-letters by
itself, past ``max_deliveries``), **oldest_message_age** (how long the head of a queue has
waited) and **remove_dead_letters**.

Everything is ``async``; a transport that talks to a blocking library does so in a way that keeps
each call short. Sync producers go through :meth:`Transport.publish_sync`, which a transport with
a native blocking client overrides so that ``.delay()`` in a Django view costs one round trip and
no event loop.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from celeriac.errors import ImproperlyConfigured
from celeriac.protocol.message import Message
from celeriac.routing import Binding, Exchange, Queue

logger = logging.getLogger("celeriac.transports")

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_DELIVERIES = 10
DEAD_LETTER_SUFFIX = ".dlq"
#: Default ``confirm_window`` (RabbitMQ, Redis): sync sends pipelined, at most this many
#: awaiting the broker's confirm at a time.
CONFIRM_WINDOW = 256


def confirm_window(options: dict[str, Any]) -> int:
    """The ``confirm_window`` transport option: an integer >= 0 (a string of one, from a URL
    or an environment variable, too), or a start-up error naming it."""
    value = options.get("confirm_window", CONFIRM_WINDOW)
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = -1
    if size < 0 or isinstance(value, bool):
        raise ImproperlyConfigured(
            f"broker_transport_options 'confirm_window' must be an integer >= 0, not {value!r}"
        )
    return size


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: where to (exchange, routing key) and from when (``due_at``).

    ``due_at`` is a UNIX timestamp; ``None`` or a past time means "deliverable now". The message's
    priority comes from ``message.properties["priority"]`` (0-9, higher first).

    ``wire`` is ``message.to_wire()`` when the sender already has it: the bulk path builds a
    batch's envelopes from one template (:mod:`celeriac.protocol.template`) far cheaper than a
    ``to_wire()`` per message, and a transport that stores envelopes takes them from
    :meth:`envelope`. Transports with native message properties (AMQP) read ``message``.
    """

    message: Message
    exchange: str
    routing_key: str
    due_at: float | None = None
    wire: bytes | None = field(default=None, repr=False, compare=False)
    #: Publish this message only if no message with the same key was published in the last
    #: ``dedup_ttl`` seconds; the broker checks and records the key in the same atomic step as
    #: the publish (beat sends each slot with ``"<entry>@<slot>"``, so two beats that both think
    #: they lead cannot double a run). Transports whose :attr:`Transport.deduplicates` is False
    #: (AMQP) publish it regardless.
    dedup_key: str | None = None
    dedup_ttl: float = 86400.0

    def envelope(self) -> bytes:
        """The message in kombu's JSON envelope (raises DecodeError if headers are not JSON)."""
        return self.wire if self.wire is not None else self.message.to_wire()


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer, leased to it until settled.

    ``payload`` holds the raw bytes as stored, so that even a message that cannot be decoded can be
    dead-lettered intact. ``tag`` is the transport's handle for settling it; ``delivery_count`` is
    1 on the first delivery and grows with each redelivery.
    """

    tag: Any
    queue: str
    payload: bytes
    delivery_count: int = 1
    transport_data: dict[str, Any] = field(default_factory=dict)
    _message: Message | None = field(default=None, repr=False)

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1

    def decode(self) -> Message:
        """The message in this delivery; raises :class:`~celeriac.errors.DecodeError` if broken."""
        if self._message is None:
            self._message = Message.from_wire(self.payload)
        return self._message


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was dead-lettered, with why and when.

    ``id`` names the letter on its broker, stable between two reads, so that
    :meth:`Transport.remove_dead_letters` removes exactly the letters a caller chose (a row id,
    a counter, or a digest of what the broker keeps of it); ``None`` where a transport gives
    none.
    """

    queue: str
    payload: bytes
    reason: str
    delivery_count: int
    failed_at: float
    id: str | None = None


class Listener(abc.ABC):
    """What :meth:`Transport.listen` returns: the messages published to an exchange from now
    on that match its patterns, for as long as it is open.

    Bounded: a listener that falls behind by more than its ``buffer`` loses the oldest messages
    and counts them in :attr:`dropped` (events are a stream, not a queue). Open it with
    ``async with`` or :meth:`open`; close it and nothing of it stays in the broker.
    """

    dropped: int = 0

    @abc.abstractmethod
    async def open(self) -> None:
        """Start receiving (messages published before this returns may be missed)."""

    @abc.abstractmethod
    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, waiting up to ``timeout`` seconds (None: no limit); None if none
        came."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving and release what the listener holds in the broker."""

    async def __aenter__(self) -> Listener:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EarlyAcks(Protocol):
    """Where a transport finds the early acks it may carry (:meth:`Transport.carry_early_acks`):
    the worker's ack batcher."""

    def take(self) -> list[Delivery]:
        """The early acks waiting now, handed over: the transport settles them from here on."""

    def failed(self, exc: BaseException, deliveries: Sequence[Delivery]) -> None:
        """A carried batch could not be settled (its messages come back when leases end)."""


class Fetcher(Protocol):
    """A blocking consumer for one process that fetches its own messages one batch at a time
    and has nothing else to do while it waits (:meth:`Transport.fetcher`)."""

    #: The connection's id on the broker, by which another connection may end a wait.
    client_id: int | None

    def fetch(
        self, queues: Sequence[str], max_count: int, timeout: float, acks: Sequence[Delivery] = ()
    ) -> list[Delivery]:
        """Ack ``acks``, then lease up to ``max_count`` messages, waiting up to ``timeout``
        (``interrupted`` is set when another connection ended the wait)."""

    #: The last fetch's wait was ended from elsewhere (see ``client_id``).
    interrupted: bool
    #: The last fetch left ready messages behind (its caller may take two next time).
    ready_left: bool

    def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    def ack_ahead(self, deliveries: Sequence[Delivery]) -> None:
        """Ack now; the reply is read with the next call's."""

    def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None: ...

    def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Return messages claimed but not run to their places in their queues."""

    def reject(self, deliveries: Sequence[Delivery], reason: str) -> None: ...

    def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None: ...

    def close(self) -> None:
        """Disconnect."""


class Transport(abc.ABC):
    """The broker contract. Subclasses register a URL scheme in :mod:`celeriac.transports.registry`.

    ``options`` are the app's ``broker_transport_options``: each transport documents the keys it
    reads (``lease_seconds`` and ``max_deliveries`` are common to all).
    """

    #: URL schemes served by this class, for the registry.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: True when publish_sync is native (no event loop involved).
    native_sync_publish: ClassVar[bool] = False
    #: How many messages sent from sync code may await their broker's confirm in the
    #: background (``confirm_window``); 0: each sync send waits for its own. A transport
    #: without a native sync publish gets it from :mod:`celeriac.app.pipeline`; one with
    #: (Redis) keeps its own window and reads it to its end in :meth:`flush_sync`.
    sync_publish_window: int = 0
    #: Whether :attr:`Outgoing.dedup_key` is honoured (see there).
    deduplicates: ClassVar[bool] = False
    #: How long a worker may hold early acks to send them together (:mod:`celeriac.worker.acks`).
    #: Worth it where the worker pulls (Redis, SQLite: one settle call for many); a broker
    #: that pushes within a QoS window (RabbitMQ) must have them at once, or it stops pushing.
    early_ack_delay: ClassVar[float] = 0.002

    def carry_early_acks(self, source: EarlyAcks) -> None:
        """Offer the worker's early acks a ride on this transport's own writes.

        A transport that writes to the broker anyway when it starts to wait for messages
        (Redis: its ``BLPOP`` with the claim behind it) may send the early acks waiting in
        ``source`` in that same write, rather than in a round trip of their own a few
        milliseconds later. The default takes none: the worker sends them itself.
        """

    async def unblock(self, client_id: int) -> None:
        """End the wait for messages of the :class:`Fetcher` whose ``client_id`` this is (its
        fetch returns with ``interrupted`` set). Only a transport with a fetcher has this."""
        raise NotImplementedError(f"{type(self).__name__} has no fetcher to unblock")

    def fetcher(self) -> Fetcher | None:
        """A blocking consumer of this process's own, or ``None`` (the default) where the
        transport has none: a prefork child then takes its tasks from the worker."""
        return None

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options
        self.lease_seconds = float(options.get("lease_seconds", DEFAULT_LEASE_SECONDS))
        self.max_deliveries = int(options.get("max_deliveries", DEFAULT_MAX_DELIVERIES))
        self._dead_letter_watcher: Callable[[Sequence[DeadLetter]], None] | None = None

    # -- life cycle -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open connections. Raise :class:`~celeriac.errors.TransportError` if unreachable."""

    async def close(self) -> None:
        """Release connections; unsettled deliveries return to their queues by lease expiry."""

    # -- topology ---------------------------------------------------------------------------
    @abc.abstractmethod
    async def declare_exchange(self, exchange: Exchange) -> None:
        """Create the exchange if missing (idempotent)."""

    @abc.abstractmethod
    async def declare_queue(self, queue: Queue) -> None:
        """Create the queue, its exchanges and its bindings if missing (idempotent)."""

    @abc.abstractmethod
    async def bind(self, binding: Binding) -> None:
        """Add one binding (idempotent)."""

    @abc.abstractmethod
    async def unbind(self, binding: Binding) -> None:
        """Remove one binding (no error when absent)."""

    @abc.abstractmethod
    async def delete_queue(self, name: str) -> None:
        """Remove a queue, its messages and its bindings (no error when absent)."""

    # -- producing --------------------------------------------------------------------------
    async def publish(self, item: Outgoing) -> int:
        """Publish one message; returns how many queues it reached (0 when unroutable)."""
        return (await self.publish_batch([item]))[0]

    @abc.abstractmethod
    async def publish_batch(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish many messages in as few round trips as the broker allows; counts per item."""

    def publish_now(self, items: Sequence[Outgoing]) -> asyncio.Future[list[int]] | None:
        """Start publishing ``items`` from a callback on the running loop, awaiting nothing:
        the future gives their counts, as :meth:`publish_batch` would (or its error, a
        :class:`~celeriac.errors.TransportError` for a broker's); ``None`` when it
        cannot start them now (the caller awaits :meth:`publish_batch` instead, as it does for
        a transport without this). Why: the sync producer's window (:mod:`celeriac.app.pipeline`)
        hands a ``.delay()`` to its loop in a callback; written there, the message leaves a loop
        turn or two sooner than from a task, which a round trip waits for."""
        return None

    def publish_sync(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish from synchronous code. Transports with a blocking client override this.

        The default runs :meth:`publish_batch` on a private event loop, which costs a loop per
        call: acceptable for scripts, and the reason the built-in transports override it.
        """
        return asyncio.run(self.publish_batch(items))

    def flush_sync(self) -> None:
        """Wait until what this thread sent through :meth:`publish_sync` is on the broker, and
        raise if some of it cannot be published: for a transport that writes sync sends ahead
        of their replies (Redis' ``confirm_window``). Others wait in each send: nothing to do."""

    # -- consuming --------------------------------------------------------------------------
    @abc.abstractmethod
    async def get(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_count`` due messages from ``queues``, highest priority first.

        Waits up to ``timeout`` seconds for the first one and returns ``[]`` if none came.
        Queues are served fairly: one busy queue does not starve the others. Must be safe to
        cancel: a cancelled ``get`` leaves no message leased to nobody (the worker cancels it
        to stop promptly).
        """

    def watch_capacity(self, capacity: Callable[[], int]) -> None:
        """Let the transport ask the consumer, whenever it wants, how many deliveries it may
        hold *unsettled* at most right now: the room left in its window plus the deliveries it
        holds and has not decided to settle (a running task whose message it acked early no
        longer counts, though it still fills the window). A broker that pushes ahead of ``get``
        (RabbitMQ: QoS) uses it to push no more than that, and to change its limit only when
        that changes. The default ignores it: a transport that takes only what ``get`` asks
        for needs no more."""

    def watch_dead_letters(self, watcher: Callable[[Sequence[DeadLetter]], None]) -> None:
        """Have ``watcher`` called with the messages this transport dead-letters *by itself*
        while a :meth:`get` claims (those delivered ``max_deliveries`` times without being
        settled: their workers kept dying, or lost their connection, while holding them).

        Nobody settled those, so without this nobody would record their end: the worker uses it
        to fail the task's result and move its workflow on (a chord counts the member as
        failed instead of waiting for it for ever). Called on the event loop of the ``get``,
        after the letters are safely stored, never from inside a broker transaction; a
        watcher must not block. Messages dead-lettered by :meth:`reject` are not reported: the
        caller of ``reject`` knows them already.

        Transports whose broker dead-letters without telling the client (a RabbitMQ quorum
        queue past its ``x-delivery-limit``) cannot report those; each says so.
        """
        self._dead_letter_watcher = watcher

    def _report_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Tell the watcher (if any) of ``letters``; a watcher's error is logged, never raised
        into the ``get`` that found them (the letters are stored already)."""
        watcher = self._dead_letter_watcher
        if watcher is None or not letters:
            return
        try:
            watcher(letters)
        except Exception:
            logger.exception("the dead-letter watcher failed on %d letters", len(letters))

    async def stop_consuming(self, queue: str) -> None:
        """Stop consuming ``queue`` in this process: give back what was taken from it ahead of
        any :meth:`get` (a broker that pushes, such as RabbitMQ, cancels its consumer and returns
        what it pushed) and what a cancelled ``get`` took from it, so that once this returns,
        every message of ``queue`` not handed to the caller waits on the broker for any
        consumer. The caller's own next ``get`` no longer names ``queue``; a ``get`` that
        names it again consumes it again.

        The default does nothing: right for a transport that holds nothing between two ``get``
        calls and whose cancelled ``get`` leaves nothing to give back.
        """

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries as done: the messages are removed for good."""

    @abc.abstractmethod
    async def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        """Put deliveries back in their queues, deliverable after ``delay`` seconds."""

    @abc.abstractmethod
    async def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Move deliveries to their queue's dead-letter queue, recording ``reason``."""

    @abc.abstractmethod
    async def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None:
        """Renew the leases of deliveries still held (``seconds`` defaults to lease_seconds)."""

    # -- transient fan-out (events, remote-control requests) --------------------------------
    async def publish_transient(
        self, exchange: Exchange, routing_key: str, messages: Sequence[Message]
    ) -> None:
        """Publish to whoever :meth:`listen` s to ``exchange`` now (fanout: every listener; topic:
        those whose pattern matches ``routing_key``). Kept nowhere for a listener that is not
        there: an event or a control request sent while no one listens is gone, never queued
        where nobody will read it. Not persistent, not confirmed."""
        raise NotImplementedError(f"{type(self).__name__} has no transient fan-out")

    def listen(
        self, exchange: Exchange, patterns: Sequence[str] = ("#",), *, buffer: int = 10_000
    ) -> Listener:
        """A :class:`Listener` for ``exchange`` (a topic exchange matches ``patterns`` as AMQP
        does: ``*`` one word, ``#`` any; a fanout exchange ignores them)."""
        raise NotImplementedError(f"{type(self).__name__} has no transient fan-out")

    # -- inspection -------------------------------------------------------------------------
    @abc.abstractmethod
    async def size(self, queue: str) -> int:
        """How many messages wait in ``queue`` (due or delayed, not those leased out)."""

    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Remove every waiting message from ``queue``; returns how many were removed."""

    @abc.abstractmethod
    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The newest dead-lettered messages of ``queue``, newest first."""

    async def oldest_message_age(self, queue: str) -> float | None:
        """How long, in seconds, the longest-waiting message *ready now* in ``queue`` has
        waited for a consumer: since it was published, or, if it waited on the broker first (a
        countdown or eta, a delayed requeue, an expired lease), since it became deliverable.
        ``0.0`` when no message is ready (delayed and leased ones do not count), so that a
        gauge fed from it falls back when the queue drains.

        ``None`` means the broker cannot tell cheaply; that is the default, and what a
        transport that keeps no time per message returns (each says so in its own docstring).
        A transport answers from an index or a few reads, not by scanning the queue (the
        in-process broker looks through its own memory), and never by taking a message (a peek
        would mark it redelivered on some brokers).
        """
        return None

    async def remove_dead_letters(self, queue: str, letters: Sequence[DeadLetter]) -> int:
        """Delete these dead letters of ``queue`` (as :meth:`dead_letters` returned them: they
        are matched by :attr:`DeadLetter.id`); returns how many were removed. A letter gone
        already (removed by someone else) is not an error, and counts nothing.

        The default removes nothing and returns 0: a transport that cannot delete chosen dead
        letters leaves them to its own retention, and the caller hides them itself.
        """
        return 0

    def __repr__(self) -> str:
        from celeriac.utils.urls import redact_url

        return f"<{type(self).__name__} {redact_url(self.url)}>"
