"""What the memory and SQLite transports share: stored topology, routing, waking consumers.

The memory and SQLite brokers store their topology as plain data and let
:func:`celeriac.routing.route` decide where a message goes. This module holds that data
(:class:`Topology`) and the rules both transports must agree on, so that a test passing on
memory means the same thing on SQLite:

* the default exchange ``""`` always exists and sends a message to the queue named by its
  routing key, *if that queue has been declared* (AMQP's rule); nothing needs binding to it;
* publishing to any other exchange that was never declared is an error naming the exchange,
  as RabbitMQ would close the channel with 404;
* a message that reaches no queue is dropped (logged at debug level) and counted 0;
* a headers exchange routes on the message's headers (its protocol v2 headers, user ``headers=``
  included, as RabbitMQ sees them in the AMQP headers table), never on the routing key;
* a queue's ``max_priority`` clamps the priority a message is stored with in that queue; its
  ``x-max-priority`` argument (kombu's ``queue_arguments``) sets that range. The other AMQP queue
  arguments mean nothing here: they are ignored and logged (:mod:`celeriac.transports.arguments`
  says which and why they are not refused);
* a ``no_declare`` queue is never declared (it, its exchange and bindings are assumed to exist);
* declaring an existing exchange with another type is refused (AMQP's PRECONDITION_FAILED);
  declaring an existing queue again keeps its first declaration (a changed ``max_priority`` is
  logged, not applied, because the stored messages were already prioritised under the old one).

:class:`Topology` is not thread-safe: each transport guards it with its own lock or transaction.
:class:`Waiters` is: it lets a publish in any thread wake the ``get()`` calls waiting on any event
loop of the process, which is how both transports deliver in-process sends without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from celeriac.errors import TransportError
from celeriac.protocol.message import Message
from celeriac.routing import DEFAULT_EXCHANGE, Binding, Exchange, Queue, route
from celeriac.transports.arguments import report_ignored_arguments
from celeriac.transports.base import Outgoing

logger = logging.getLogger(__name__)

T = TypeVar("T")

MIN_PRIORITY = 0
MAX_PRIORITY = 9


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """What a broker remembers about a declared queue."""

    name: str
    max_priority: int = MAX_PRIORITY
    auto_delete: bool = False


@dataclass(frozen=True, slots=True)
class Destination:
    """One copy of a message to store: the queue it goes to and its priority there."""

    queue: str
    priority: int


def message_priority(message: Message) -> int:
    """The message's priority within 0-9; a missing or malformed value counts as 0.

    A producer from another library may send any JSON there; a bad priority must not make the
    message unpublishable, so it falls back to the lowest priority instead of raising.
    """
    try:
        value = message.priority
    except (TypeError, ValueError):
        return MIN_PRIORITY
    return max(MIN_PRIORITY, min(MAX_PRIORITY, value))


def unknown_exchange(name: str) -> TransportError:
    """The error for publishing to (or binding to) an exchange that was never declared."""
    return TransportError(
        f"exchange {name!r} is not declared: declare it (or a queue bound to it) first"
    )


def max_deliveries_reason(delivery_count: int, max_deliveries: int) -> str:
    """The dead-letter reason both transports record for a message nobody ever acked."""
    return f"delivered {delivery_count} times without an ack (max_deliveries={max_deliveries})"


class Topology:
    """The declared exchanges, queues and bindings of one broker, and routing over them."""

    def __init__(self) -> None:
        self.exchanges: dict[str, str] = {}
        self.queues: dict[str, QueueInfo] = {}
        # exchange name -> ordered set of its bindings (dict keys keep declaration order).
        self._bindings: dict[str, dict[Binding, None]] = {}

    @classmethod
    def from_rows(
        cls,
        exchanges: Iterable[tuple[str, str]],
        queues: Iterable[QueueInfo],
        bindings: Iterable[Binding],
    ) -> Topology:
        """Rebuild a topology from stored rows (the SQLite transport's tables)."""
        topology = cls()
        topology.exchanges.update(exchanges)
        topology.queues.update((q.name, q) for q in queues)
        for binding in bindings:
            topology._bindings.setdefault(binding.exchange, {})[binding] = None
        return topology

    def bindings(self) -> list[Binding]:
        """Every binding, grouped by exchange, in declaration order."""
        return [b for per_exchange in self._bindings.values() for b in per_exchange]

    # -- changes ------------------------------------------------------------------------------
    def declare_exchange(self, exchange: Exchange) -> bool:
        """Add the exchange if missing; returns True when something changed."""
        if exchange.name == DEFAULT_EXCHANGE:
            return False
        existing = self.exchanges.get(exchange.name)
        if existing is None:
            self.exchanges[exchange.name] = exchange.type
            return True
        if existing != exchange.type:
            raise TransportError(
                f"exchange {exchange.name!r} is already declared as {existing!r}, "
                f"not {exchange.type!r}"
            )
        return False

    def declare_queue(self, queue: Queue) -> bool:
        """Add the queue, its exchange and its bindings if missing; True when anything changed.

        Every binding is checked before anything is added, so a refused declaration leaves the
        topology as it was. A ``no_declare`` queue changes nothing.
        """
        if queue.no_declare:
            return False
        report_ignored_arguments(queue)
        for exchange in queue.exchanges():
            existing = self.exchanges.get(exchange.name)
            if existing is not None and existing != exchange.type:
                self.declare_exchange(exchange)  # raises with the explanation
        own = {e.name for e in queue.exchanges()}
        for binding in queue.all_bindings():
            if binding.exchange not in own:
                self._check_exchange(binding.exchange)
        changed = False
        for exchange in queue.exchanges():
            changed |= self.declare_exchange(exchange)
        existing_queue = self.queues.get(queue.name)
        if existing_queue is None:
            self.queues[queue.name] = QueueInfo(queue.name, queue.max_priority, queue.auto_delete)
            changed = True
        elif existing_queue.max_priority != queue.max_priority:
            logger.warning(
                "queue %r is already declared with max_priority=%d; keeping it (not %d)",
                queue.name,
                existing_queue.max_priority,
                queue.max_priority,
            )
        for binding in queue.all_bindings():
            changed |= self._add_binding(binding)
        return changed

    def bind(self, binding: Binding) -> bool:
        """Add one binding; both ends must exist, as in AMQP. True when it was new."""
        self._check_exchange(binding.exchange)
        if binding.queue not in self.queues:
            raise TransportError(f"cannot bind: queue {binding.queue!r} is not declared")
        return self._add_binding(binding)

    def unbind(self, binding: Binding) -> bool:
        """Remove one binding if present; True when it was there."""
        per_exchange = self._bindings.get(binding.exchange)
        if per_exchange is None or binding not in per_exchange:
            return False
        del per_exchange[binding]
        return True

    def delete_queue(self, name: str) -> bool:
        """Forget a queue and every binding to it; True when it was declared."""
        for per_exchange in self._bindings.values():
            for binding in [b for b in per_exchange if b.queue == name]:
                del per_exchange[binding]
        return self.queues.pop(name, None) is not None

    def _check_exchange(self, name: str) -> None:
        if name == DEFAULT_EXCHANGE:
            raise TransportError("the default exchange '' cannot be bound to explicitly")
        if name not in self.exchanges:
            raise unknown_exchange(name)

    def _add_binding(self, binding: Binding) -> bool:
        if binding.exchange == DEFAULT_EXCHANGE:
            return False  # every queue is implicitly bound to the default exchange
        per_exchange = self._bindings.setdefault(binding.exchange, {})
        if binding in per_exchange:
            return False
        per_exchange[binding] = None
        return True

    # -- routing ------------------------------------------------------------------------------
    def queues_for(
        self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None = None
    ) -> list[str]:
        """The declared queues a message published to ``exchange`` with ``routing_key`` (and
        ``headers``, which only a headers exchange reads) reaches."""
        if exchange == DEFAULT_EXCHANGE:
            return [routing_key] if routing_key in self.queues else []
        exchange_type = self.exchanges.get(exchange)
        if exchange_type is None:
            raise unknown_exchange(exchange)
        bindings = self._bindings.get(exchange, {})
        queues = route(exchange_type, bindings, routing_key, headers)
        return [q for q in queues if q in self.queues]

    def plan(self, items: Sequence[Outgoing]) -> list[list[Destination]]:
        """Where each item goes, with its priority clamped per queue.

        The whole batch is routed before anything is stored, so an unknown exchange anywhere in
        it refuses the batch as a whole instead of leaving half of it published. Routes are
        memoised per (exchange, key): a batch of 10,000 sends to one queue routes once. Not on a
        headers exchange, where each message's headers decide (and differ at least by ``id``).
        """
        cache: dict[tuple[str, str], list[str]] = {}
        plans: list[list[Destination]] = []
        for item in items:
            key = (item.exchange, item.routing_key)
            queues = cache.get(key)
            if queues is None:
                if self.exchanges.get(item.exchange) == "headers":
                    headers = item.message.headers
                    queues = self.queues_for(item.exchange, item.routing_key, headers)
                else:
                    queues = cache[key] = self.queues_for(item.exchange, item.routing_key)
            if not queues:
                logger.debug(
                    "message %s to exchange %r with key %r reached no queue: dropped",
                    item.message.id,
                    item.exchange,
                    item.routing_key,
                )
                plans.append([])
                continue
            priority = message_priority(item.message)
            plans.append(
                [Destination(q, min(priority, self.queues[q].max_priority)) for q in queues]
            )
        return plans


def claim_fairly(
    queues: Sequence[str], max_count: int, start: int, claim: Callable[[str, int], list[T]]
) -> list[T]:
    """Split ``max_count`` between ``queues`` so that one busy queue cannot starve the others.

    Each queue, starting at ``start`` (rotate it between calls), is offered an even share of
    what is still wanted; what a short queue leaves is offered again, in the same order, to the
    queues that filled their share. ``claim(queue, n)`` returns at most ``n`` items.
    """
    unique = list(dict.fromkeys(queues))
    if not unique or max_count <= 0:
        return []
    offset = start % len(unique)
    order = unique[offset:] + unique[:offset]
    taken: list[T] = []
    full: list[str] = []
    for index, queue in enumerate(order):
        wanted = max_count - len(taken)
        if wanted <= 0:
            break
        share = -(-wanted // (len(order) - index))  # ceiling division
        got = claim(queue, share)
        taken.extend(got)
        if len(got) >= share:
            full.append(queue)
    for queue in full:
        wanted = max_count - len(taken)
        if wanted <= 0:
            break
        taken.extend(claim(queue, wanted))
    return taken


class Waiter:
    """One waiting ``get()`` on its own loop, woken from whichever thread publishes.

    A bare future with a ``call_later`` timeout rather than ``asyncio.wait_for`` on an event:
    an idle consumer waits many times a second, and this costs no task per wait.
    """

    __slots__ = ("_armed", "_future", "_woken", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._woken = False
        self._armed = True
        self._future: asyncio.Future[bool] | None = None

    def clear(self) -> None:
        """Forget past wake-ups; call before looking at the queues, never after."""
        self._woken = False
        self._armed = True

    def wake(self) -> None:
        """Wake the waiter from any thread; repeated wake-ups before a clear cost nothing.

        Publishers commit before they wake, and consumers clear before they look, so a wake-up
        skipped here (already pending) can only concern a message the next look will see.
        """
        if not self._armed:
            return
        self._armed = False
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody left to wake
            self.loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        self._woken = True
        if self._future is not None and not self._future.done():
            self._future.set_result(True)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when woken rather than timed out."""
        if self._woken:
            return True
        if timeout <= 0:
            return False
        future: asyncio.Future[bool] = self.loop.create_future()
        self._future = future
        timer = self.loop.call_later(timeout, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()
            self._future = None


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Waiters:
    """The set of waiting ``get()`` calls of one broker, safe to notify from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[Waiter] = set()

    def register(self) -> Waiter:
        """A new waiter on the running loop; register it *before* the first look at the queues,
        so that a publish landing between that look and the wait is not missed."""
        waiter = Waiter(asyncio.get_running_loop())
        with self._lock:
            self._waiting.add(waiter)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        with self._lock:
            self._waiting.discard(waiter)

    def notify_all(self) -> None:
        """Wake every waiter (they re-check their own queues; a spurious wake-up is cheap)."""
        with self._lock:
            waiting = list(self._waiting)
        for waiter in waiting:
            waiter.wake()


__all__ = [
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Destination",
    "QueueInfo",
    "Topology",
    "Waiter",
    "Waiters",
    "claim_fairly",
    "max_deliveries_reason",
    "message_priority",
    "unknown_exchange",
]
