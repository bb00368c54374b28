"""An in-process broker: the whole transport contract in memory, for tests and eager-ish use.

Instances created with the same URL in one process (``"memory://"``, ``"memory://name"``) share
one broker, so a producer and a worker built separately by a test talk to each other. That
module-level registry, ``_BROKERS``, is the one deliberate piece of process state in this
module; :func:`reset_memory_brokers` empties it between tests.

It behaves like the durable brokers in everything but durability: leases that expire and
redeliver with ``delivery_count + 1``, ``max_deliveries`` and dead letters with a reason,
``due_at`` delays, priorities 0-9 (higher first, FIFO within one priority), and direct, topic,
fanout and headers exchanges over stored bindings (see :mod:`celeriac.transports.topology`).

Every operation is a short critical section under one ``threading.Lock`` per broker, so sync
producers in other threads (``publish_sync`` needs no event loop) and a worker's event loop can
share it; a publish wakes waiting ``get()`` calls on any loop at once.

How a message is kept: each one has a *visibility time* (``due_at``). Publishing sets it to when
the message is due; leasing moves it to the lease's end, so an expired lease simply makes the
message visible again; requeueing sets it to now plus the delay. Visible messages wait in a heap
ordered by (priority descending, visibility time, id); the others in a heap ordered by time.
Heap items carry a generation number, so a moved or settled message leaves a stale item behind
that is skipped when reached instead of being searched for.

**Deduplication** (:attr:`~celeriac.transports.base.Outgoing.dedup_key`): a keyed item is
stored only if its key was not recorded in the last ``dedup_ttl`` seconds, checked and recorded
under the broker's lock in the same critical section as the store, so two threads racing one key
store it once. A dropped item counts 0 (it reached no queue through this call); an unroutable
keyed item records nothing. Expired keys leave through a heap ordered by expiry, popped as
keyed publishes pass: an item without a key costs one attribute test.

**Transient fan-out** (events, remote-control requests): each broker has a
:class:`~celeriac.transports.transient.LocalHub` of the listeners open on it; a publish hands
its envelopes to those whose exchange and patterns take the routing key, each into its own
bounded inbox (the oldest dropped and counted past ``buffer``), from any thread to a listener on
any loop. Nothing is kept for a listener that is not there.

Upper layers may keep state of their own per broker (beat's store does) with
:func:`shared_state`, so that :func:`reset_memory_brokers` forgets it too.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from celeriac.protocol.message import Message
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.base import DeadLetter, Delivery, Listener, Outgoing, Transport
from celeriac.transports.topology import Topology, Waiters, claim_fairly, max_deliveries_reason
from celeriac.transports.transient import DEFAULT_BUFFER, LocalHub, LocalListener

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class _Entry:
    """One stored copy of a message in one queue."""

    id: int
    queue: str
    payload: bytes
    message: Message | None
    priority: int
    due_at: float
    exchange: str
    routing_key: str
    delivery_count: int = 0
    token: int = 0  # the current or last lease; 0 when not leased since its last requeue
    gen: int = 0
    lost: int = 0  # leases that ran out (what ``max_deliveries`` counts; requeues do not)


@dataclass(slots=True)
class _QueueState:
    """The messages of one queue: all of them by id, plus the two ordering heaps."""

    entries: dict[int, _Entry] = field(default_factory=dict)
    visible: list[tuple[int, float, int, int]] = field(default_factory=list)  # -prio, due, id, gen
    hidden: list[tuple[float, int, int]] = field(default_factory=list)  # due_at, id, gen

    def place(self, entry: _Entry, now: float) -> None:
        """(Re)file the entry by its visibility time; older heap items for it become stale."""
        entry.gen += 1
        if entry.due_at <= now:
            heapq.heappush(self.visible, (-entry.priority, entry.due_at, entry.id, entry.gen))
        else:
            heapq.heappush(self.hidden, (entry.due_at, entry.id, entry.gen))
        if len(self.visible) + len(self.hidden) > 2 * len(self.entries) + 1024:
            self._compact(now)

    def _current(self, entry_id: int, gen: int) -> _Entry | None:
        entry = self.entries.get(entry_id)
        return entry if entry is not None and entry.gen == gen else None

    def reveal(self, now: float) -> None:
        """Move every hidden message whose time has come into the visible heap."""
        while self.hidden and self.hidden[0][0] <= now:
            _, entry_id, gen = heapq.heappop(self.hidden)
            entry = self._current(entry_id, gen)
            if entry is not None:
                heapq.heappush(self.visible, (-entry.priority, entry.due_at, entry.id, entry.gen))

    def pop_visible(self, now: float) -> _Entry | None:
        """The next message to deliver, or None."""
        self.reveal(now)
        while self.visible:
            _, _, entry_id, gen = heapq.heappop(self.visible)
            entry = self._current(entry_id, gen)
            if entry is not None:
                return entry
        return None

    def next_due(self) -> float | None:
        """When the earliest hidden message becomes visible (possibly a stale item: harmless)."""
        return self.hidden[0][0] if self.hidden else None

    def leased_now(self, now: float) -> int:
        return sum(1 for e in self.entries.values() if e.token and e.due_at > now)

    def _compact(self, now: float) -> None:
        """Rebuild both heaps from the live entries, dropping the stale items."""
        self.visible = [
            (-e.priority, e.due_at, e.id, e.gen) for e in self.entries.values() if e.due_at <= now
        ]
        self.hidden = [(e.due_at, e.id, e.gen) for e in self.entries.values() if e.due_at > now]
        heapq.heapify(self.visible)
        heapq.heapify(self.hidden)


class _SeenKeys:
    """The dedup keys recorded and until when; expired ones leave through a heap by expiry."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}
        self.expiries: list[tuple[float, str]] = []

    def record(self, key: str, ttl: float, now: float) -> bool:
        """Record ``key`` for ``ttl`` seconds unless it is recorded now; whether it was."""
        while self.expiries and self.expiries[0][0] <= now:
            at, old = heapq.heappop(self.expiries)
            if self.until.get(old) == at:
                del self.until[old]
        if self.until.get(key, 0.0) > now:
            return False
        if ttl > 0:
            self.until[key] = now + ttl
            heapq.heappush(self.expiries, (now + ttl, key))
        return True


class _Broker:
    """The shared state behind every MemoryTransport of one URL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.topology = Topology()
        self.queues: dict[str, _QueueState] = {}
        self.dead: dict[str, list[DeadLetter]] = {}
        self.waiters = Waiters()
        self.ids = itertools.count(1)
        self.letter_ids = itertools.count(1)
        self.tokens = itertools.count(1)
        self.seen = _SeenKeys()
        self.shared: dict[str, Any] = {}
        self.hub = LocalHub()


_BROKERS: dict[str, _Broker] = {}
_BROKERS_LOCK = threading.Lock()


def _broker_for(url: str) -> _Broker:
    key = url.rstrip("/")
    with _BROKERS_LOCK:
        broker = _BROKERS.get(key)
        if broker is None:
            broker = _BROKERS[key] = _Broker()
        return broker


def shared_state(url: str, name: str, factory: Callable[[], T]) -> T:
    """The object ``name`` kept with the memory broker of ``url``, made by ``factory`` on first
    use: state an upper layer shares between the instances of one broker URL in this process
    (beat's store), forgotten with the broker by :func:`reset_memory_brokers`."""
    broker = _broker_for(url)
    with broker.lock:
        if name not in broker.shared:
            broker.shared[name] = factory()
        return broker.shared[name]  # type: ignore[no-any-return]


def reset_memory_brokers() -> None:
    """Forget every in-memory broker of this process (tests call it between cases).

    Transports created earlier keep the broker they already hold; new ones start empty.
    """
    with _BROKERS_LOCK:
        _BROKERS.clear()


class MemoryTransport(Transport):
    """The in-process broker. Options: ``lease_seconds``, ``max_deliveries``."""

    schemes: ClassVar[tuple[str, ...]] = ("memory",)
    native_sync_publish: ClassVar[bool] = True
    deduplicates: ClassVar[bool] = True

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self._broker = _broker_for(url)
        self._auto_delete: set[str] = set()
        self._rotation = 0
        self._listeners: list[LocalListener] = []

    async def close(self) -> None:
        """Delete the auto-delete queues this instance declared (their consumer is gone) and
        close the listeners it made."""
        for name in sorted(self._auto_delete):
            await self.delete_queue(name)
        self._auto_delete.clear()
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            await listener.close()

    # -- topology -----------------------------------------------------------------------------
    async def declare_exchange(self, exchange: Exchange) -> None:
        with self._broker.lock:
            self._broker.topology.declare_exchange(exchange)

    async def declare_queue(self, queue: Queue) -> None:
        with self._broker.lock:
            self._broker.topology.declare_queue(queue)
            self._broker.queues.setdefault(queue.name, _QueueState())
        if queue.auto_delete:
            self._auto_delete.add(queue.name)

    async def bind(self, binding: Binding) -> None:
        with self._broker.lock:
            self._broker.topology.bind(binding)

    async def unbind(self, binding: Binding) -> None:
        with self._broker.lock:
            self._broker.topology.unbind(binding)

    async def delete_queue(self, name: str) -> None:
        """Remove the queue, its messages and bindings; its dead letters stay for inspection."""
        with self._broker.lock:
            self._broker.topology.delete_queue(name)
            self._broker.queues.pop(name, None)
        self._auto_delete.discard(name)

    # -- producing ----------------------------------------------------------------------------
    async def publish_batch(self, items: Sequence[Outgoing]) -> list[int]:
        return self.publish_sync(items)

    def publish_sync(self, items: Sequence[Outgoing]) -> list[int]:
        """Store the batch under the lock and wake waiting consumers; no event loop needed.

        A keyed item whose key is recorded counts 0 (see the module docstring)."""
        payloads = [item.message.to_wire() for item in items]  # may raise before any change
        now = time.time()
        counts: list[int] = []
        broker = self._broker
        with broker.lock:
            plans = broker.topology.plan(items)
            for item, payload, plan in zip(items, payloads, plans, strict=True):
                key = item.dedup_key
                if key is not None and plan and not broker.seen.record(key, item.dedup_ttl, now):
                    counts.append(0)
                    continue
                due_at = now if item.due_at is None or item.due_at < now else item.due_at
                for dest in plan:
                    entry = _Entry(
                        id=next(broker.ids),
                        queue=dest.queue,
                        payload=payload,
                        message=item.message,
                        priority=dest.priority,
                        due_at=due_at,
                        exchange=item.exchange,
                        routing_key=item.routing_key,
                    )
                    state = broker.queues.setdefault(dest.queue, _QueueState())
                    state.entries[entry.id] = entry
                    state.place(entry, now)
                counts.append(len(plan))
        if any(counts):
            broker.waiters.notify_all()
        return counts

    def put_raw(self, queue: str, payload: bytes, priority: int = 0) -> None:
        """Store raw bytes in a declared queue, bypassing encoding: for tests of poison messages
        (a payload no :class:`~celeriac.protocol.message.Message` could produce)."""
        broker = self._broker
        now = time.time()
        with broker.lock:
            if queue not in broker.topology.queues:
                raise KeyError(queue)
            entry = _Entry(next(broker.ids), queue, payload, None, priority, now, "", queue)
            state = broker.queues.setdefault(queue, _QueueState())
            state.entries[entry.id] = entry
            state.place(entry, now)
        broker.waiters.notify_all()

    # -- transient fan-out --------------------------------------------------------------------
    async def publish_transient(
        self, exchange: Exchange, routing_key: str, messages: Sequence[Message]
    ) -> None:
        self._broker.hub.publish(exchange.name, routing_key, messages)

    def listen(
        self, exchange: Exchange, patterns: Sequence[str] = ("#",), *, buffer: int = DEFAULT_BUFFER
    ) -> Listener:
        listener = LocalListener(self._broker.hub, exchange, patterns, buffer)
        self._listeners = [x for x in self._listeners if not x.inbox.closed]
        self._listeners.append(listener)
        return listener

    def transient_listeners(self, exchange: str) -> int:
        """How many listeners are open on ``exchange`` in this broker (for tests and tools)."""
        return self._broker.hub.listening(exchange)

    # -- consuming ----------------------------------------------------------------------------
    async def get(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_count`` messages, waiting up to ``timeout`` for the first.

        Waits on an event that any publish or requeue sets (from any thread), and otherwise
        sleeps only until the earliest delayed message or lease in these queues comes due.
        """
        if max_count <= 0 or not queues:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        waiter = self._broker.waiters.register()
        try:
            while True:
                waiter.clear()
                deliveries, next_due, dead = self._claim(queues, max_count)
                self._report_dead_letters(dead)
                remaining = deadline - loop.time()
                if deliveries or remaining <= 0:
                    return deliveries
                if next_due is not None:
                    remaining = min(remaining, max(next_due - time.time(), 0.0) + 0.001)
                await waiter.wait(remaining)
        finally:
            self._broker.waiters.unregister(waiter)

    def _claim(
        self, queues: Sequence[str], max_count: int
    ) -> tuple[list[Delivery], float | None, list[DeadLetter]]:
        """The leased deliveries, when the next delayed one falls due (if none was leased),
        and the messages dead-lettered on the way (past ``max_deliveries``)."""
        broker = self._broker
        dead: list[DeadLetter] = []
        now = time.time()
        lease_until = now + self.lease_seconds
        self._rotation += 1
        with broker.lock:
            token = next(broker.tokens)

            def claim_one(name: str, count: int) -> list[Delivery]:
                state = broker.queues.get(name)
                if state is None:
                    return []
                return self._lease(state, count, now, lease_until, token, dead)

            deliveries = claim_fairly(queues, max_count, self._rotation, claim_one)
            next_due: float | None = None
            if not deliveries:
                dues = [s.next_due() for q in queues if (s := broker.queues.get(q)) is not None]
                next_due = min((d for d in dues if d is not None), default=None)
        return deliveries, next_due, dead

    def _lease(
        self,
        state: _QueueState,
        count: int,
        now: float,
        lease_until: float,
        token: int,
        dead: list[DeadLetter],
    ) -> list[Delivery]:
        """Lease up to ``count`` visible messages of one queue (the broker lock is held);
        those past ``max_deliveries`` are dead-lettered and added to ``dead`` instead."""
        out: list[Delivery] = []
        while len(out) < count:
            entry = state.pop_visible(now)
            if entry is None:
                break
            if entry.token:  # visible again while leased: its lease ran out
                entry.lost += 1
            if entry.lost >= self.max_deliveries:
                reason = max_deliveries_reason(entry.lost, self.max_deliveries)
                dead.append(self._dead_letter(state, entry, reason, now))
                continue
            entry.delivery_count += 1
            entry.token = token
            entry.due_at = lease_until
            state.place(entry, now)
            out.append(
                Delivery(
                    tag=(entry.id, token),
                    queue=entry.queue,
                    payload=entry.payload,
                    delivery_count=entry.delivery_count,
                    transport_data={
                        "exchange": entry.exchange,
                        "routing_key": entry.routing_key,
                        "priority": entry.priority,
                    },
                    _message=entry.message,
                )
            )
        return out

    def _dead_letter(
        self, state: _QueueState, entry: _Entry, reason: str, now: float
    ) -> DeadLetter:
        del state.entries[entry.id]
        letter = DeadLetter(
            entry.queue,
            entry.payload,
            reason,
            entry.delivery_count,
            now,
            str(next(self._broker.letter_ids)),
        )
        self._broker.dead.setdefault(entry.queue, []).append(letter)
        logger.info("message %d of queue %r dead-lettered: %s", entry.id, entry.queue, reason)
        return letter

    def _held(
        self, deliveries: Iterable[Delivery], action: str
    ) -> list[tuple[_QueueState, _Entry]]:
        """The entries still leased under these deliveries' tokens (the broker lock is held).

        A delivery whose lease expired and went to another consumer, or that was already
        settled, is skipped with a warning: it must not settle someone else's lease.
        """
        held: list[tuple[_QueueState, _Entry]] = []
        stale: list[Any] = []
        for delivery in deliveries:
            entry_id, token = delivery.tag
            state = self._broker.queues.get(delivery.queue)
            entry = state.entries.get(entry_id) if state is not None else None
            if state is None or entry is None or entry.token != token:
                stale.append(delivery.tag)
            else:
                held.append((state, entry))
        if stale:
            logger.warning(
                "%s skipped for %d deliveries no longer held (lease expired and re-leased, "
                "or already settled): %s",
                action,
                len(stale),
                stale[:10],
            )
        return held

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._broker.lock:
            for state, entry in self._held(deliveries, "ack"):
                del state.entries[entry.id]

    async def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        now = time.time()
        with self._broker.lock:
            for state, entry in self._held(deliveries, "requeue"):
                entry.token = 0
                entry.due_at = now + max(delay, 0.0)
                state.place(entry, now)
        self._broker.waiters.notify_all()

    async def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        now = time.time()
        with self._broker.lock:
            for state, entry in self._held(deliveries, "reject"):
                self._dead_letter(state, entry, reason, now)

    async def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None:
        now = time.time()
        until = now + (self.lease_seconds if seconds is None else seconds)
        with self._broker.lock:
            for state, entry in self._held(deliveries, "extend"):
                entry.due_at = until
                state.place(entry, now)

    # -- inspection ---------------------------------------------------------------------------
    async def size(self, queue: str) -> int:
        with self._broker.lock:
            state = self._broker.queues.get(queue)
            if state is None:
                return 0
            return len(state.entries) - state.leased_now(time.time())

    async def purge(self, queue: str) -> int:
        """Remove the waiting messages (due, delayed or with an expired lease); leased ones stay."""
        now = time.time()
        with self._broker.lock:
            state = self._broker.queues.get(queue)
            if state is None:
                return 0
            kept = {i: e for i, e in state.entries.items() if e.token and e.due_at > now}
            removed = len(state.entries) - len(kept)
            state.entries = kept
            state.visible.clear()
            return removed

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with self._broker.lock:
            letters = self._broker.dead.get(queue, [])
            return letters[::-1][:limit] if limit > 0 else []

    async def oldest_message_age(self, queue: str) -> float | None:
        """Seconds since the longest-waiting ready message became deliverable (its visibility
        time: when it was published, fell due or was requeued); 0.0 when none is ready. A scan
        of the queue's entries under the lock: this broker is for tests and small tools."""
        now = time.time()
        with self._broker.lock:
            state = self._broker.queues.get(queue)
            if state is None:
                return 0.0
            oldest = min((e.due_at for e in state.entries.values() if e.due_at <= now), default=now)
        return max(0.0, now - oldest)

    async def remove_dead_letters(self, queue: str, letters: Sequence[DeadLetter]) -> int:
        """Remove the letters of ``queue`` with these ids (each letter has one here)."""
        ids = {letter.id for letter in letters if letter.id is not None}
        with self._broker.lock:
            kept = self._broker.dead.get(queue)
            if not kept or not ids:
                return 0
            left = [letter for letter in kept if letter.id not in ids]
            self._broker.dead[queue] = left
            return len(kept) - len(left)


__all__ = ["MemoryTransport", "reset_memory_brokers", "shared_state"]
