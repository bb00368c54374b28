"""The Redis broker in kombu's layout: Celery 5.7 workers and clients share its queues.

Chosen with ``broker_transport_options={"layout": "kombu"}`` (the native layout of
:mod:`celeriac.transports.redis.transport` stays the default, for celeriac-only fleets). The
keys are kombu 5.7's (:mod:`~celeriac.transports.redis.kombu_layout`): a Celery producer's
``delay()`` reaches a celeriac worker, a celeriac producer's reaches a Celery worker, and both
kinds of worker can drain one queue together. Options: ``global_keyprefix`` (kombu's, on every
key and channel), ``visibility_timeout`` (kombu's, 3600 s: celeriac's lease), ``priority_steps``,
``unacked_key`` / ``unacked_index_key`` (kombu's names), ``key_prefix`` (``celeriac:``, after
``global_keyprefix``, for celeriac's own keys), ``max_deliveries``, and the connection options
of the native layout. A ``sep`` other than kombu's is refused.

**What holds as in the native layout.** A claim is one script that pops from the lists and
records each message in kombu's ``unacked`` hash and ``unacked_index`` sorted set under a fresh
delivery tag, so a consumer that dies loses nothing: after ``visibility_timeout`` any consumer
restores its messages, a Celery worker's ``restore_visible`` or a celeriac claim (which restores
a dead Celery worker's too: :mod:`~celeriac.transports.redis.kombu_restore`). The tag is fresh
on every claim, so a holder whose record was restored meanwhile finds its tag gone: its ack,
requeue or renewal is skipped with a warning, never applied to another consumer's delivery.
``extend`` renews a record (its time in the index), so a long task is not restored from under
a live worker. ``ack`` is kombu's (the record removed), ``requeue`` is kombu's reject with
requeue (marked ``redelivered``, behind the waiting messages). Delays wait on the broker, not
in a worker's memory: a countdown/eta message a celeriac producer sends, and one a celeriac
worker fetched before it was due (a Celery producer's), are records of ``unacked`` under
``celeriac-due:<list>:<tag>`` scored ``due - visibility_timeout``, so that any consumer's
restore, a Celery worker's included, moves them to their list when they fall due. Deliveries
are counted (kombu's restore marks, and a count property), and a message delivered
``max_deliveries`` times goes to celeriac's dead letters, as do rejected ones
(``<global_keyprefix><key_prefix>dlq:<queue>``: kombu has none). Batches are published and
fetched in one script call per thousand messages; ``publish_sync`` is one round trip.

**What differs from the native layout** (kombu's rules, so that Celery agrees):

* priorities: four steps (0-2, 3-5, 6-8, 9) and the **lower number is served first**;
  ``x-max-priority`` is not read;
* a message sent to AMQP's default exchange goes to the list named by its routing key,
  declared or not (kombu keeps no list of queues); a message to a named exchange nobody
  declared is refused; headers exchanges do not exist;
* a fanout exchange is Redis PUBLISH, as kombu's: a message reaches the consumers of its
  queues subscribed at that moment and nobody else (its queues hold nothing meanwhile);
* a lease is ``visibility_timeout``: a dead worker's messages come back after it (3600 s by
  default), and its restore puts them first in line, as kombu's does;
* ``size`` and ``purge`` see the lists and celeriac's delayed messages, not the restorable
  records of dead consumers;
* an idle consumer is woken by Redis key tracking (:mod:`~celeriac.transports.redis.kombu_wake`),
  not ``BRPOP``, which would pop outside the claim.

A Celery worker holds an eta message in memory until it is due (and a kombu restore duplicates
one held longer than ``visibility_timeout``); a celeriac worker never does. Delayed messages
that only Celery workers consume are moved when a Celery worker's restore runs (every 100 s by
default), and run at their eta, which Celery reads from their headers. Every process of the
fleet must use one ``visibility_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from celeriac.errors import DecodeError, TransportError
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.arguments import report_ignored_arguments
from celeriac.transports.base import DeadLetter, Delivery, Outgoing
from celeriac.transports.redis import direct, fanout, kombu_publish, kombu_restore
from celeriac.transports.redis import kombu_scripts as ks
from celeriac.transports.redis import kombu_topology as topology
from celeriac.transports.redis.kombu_bridge import Bridges
from celeriac.transports.redis.kombu_layout import (
    DUE_PREFIX,
    KOMBU_LAYOUT,
    SEP,
    KombuNames,
    KombuOptions,
    Tags,
    claimed,
    due_field,
    envelope_priority,
    restored_envelope,
)
from celeriac.transports.redis.kombu_wake import ListWatch
from celeriac.transports.redis.transport import RedisTransport, _LoopClients
from celeriac.transports.topology import max_deliveries_reason

logger = logging.getLogger(__name__)

#: One tag source per process (see :class:`~celeriac.transports.redis.kombu_layout.Tags`).
TAGS = Tags()


class KombuRedisTransport(RedisTransport):
    """The Redis broker in kombu's layout (see the module docstring)."""

    SCRIPTS: ClassVar[dict[str, str]] = {
        "publish": ks.PUBLISH,
        "claim": ks.CLAIM,
        "settle": ks.SETTLE,
        "restore": ks.RESTORE,
        "waiting": ks.WAITING,
        "push_direct": direct.PUSH,
        "publish_fanout": fanout.PUBLISH_ALL,
    }
    layout: ClassVar[str] = KOMBU_LAYOUT

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", **options: Any) -> None:
        super().__init__(url, **options)
        self.kombu = KombuOptions.of(options)
        self.lease_seconds = self.kombu.visibility_timeout
        self.names = KombuNames.of(self.global_keyprefix, self.prefix, self.kombu)
        self._suffixes = [f"{SEP}{step}" if step else "" for step in self.kombu.steps]
        #: the subscriptions that feed the queues bound to fanout exchanges, while consumed
        self._bridges = Bridges(self)

    def _watch(self, clients: _LoopClients) -> ListWatch:
        watch = clients.extras.get("watch")
        if watch is None:
            watch = clients.extras["watch"] = ListWatch(self)
        return watch

    async def close(self) -> None:
        """Stop the fanout subscriptions (their listeners close with the base's), then close."""
        await self._bridges.stop()
        await super().close()

    # -- topology -----------------------------------------------------------------------------
    async def declare_exchange(self, exchange: Exchange) -> None:
        with self._errors("declare"):
            clients = await self._clients()
            await topology.declare_exchange(clients.client, self.names, exchange)

    async def declare_queue(self, queue: Queue) -> None:
        if queue.no_declare:
            return
        report_ignored_arguments(queue)
        declared = {exchange.name: exchange.type for exchange in queue.exchanges()}
        for exchange in queue.exchanges():
            await self.declare_exchange(exchange)
        for binding in queue.all_bindings():
            await self._bind(binding, declared.get(binding.exchange))
        if queue.auto_delete:
            self._auto_delete.add(queue.name)

    async def bind(self, binding: Binding) -> None:
        await self._bind(binding, None)

    async def _bind(self, binding: Binding, kind: str | None) -> None:
        with self._errors("bind"):
            clients = await self._clients()
            if kind is None:
                kind = await topology.exchange_kind(clients.client, self.names, binding.exchange)
            await topology.bind(clients.client, self.names, binding, kind)
        if kind == "fanout":
            self._bridges.bound.setdefault(binding.queue, set()).add(binding.exchange)

    async def unbind(self, binding: Binding) -> None:
        with self._errors("unbind"):
            clients = await self._clients()
            await topology.unbind(clients.client, self.names, binding)
        self._bridges.bound.get(binding.queue, set()).discard(binding.exchange)

    async def delete_queue(self, name: str) -> None:
        """Unbind the queue everywhere, delete its lists and delayed messages (records of
        messages taken by consumers stay; its dead letters too, for inspection)."""
        with self._errors("delete"):
            clients = await self._clients()
            await topology.unbind_everywhere(clients.client, self.names, name)
            await self._waiting(clients, "purge", name)
        self._auto_delete.discard(name)
        self._bridges.forget(name)

    # -- producing ----------------------------------------------------------------------------
    async def publish_batch(self, items: Sequence[Outgoing]) -> list[int]:
        if not items:
            return []
        calls = self._publish_calls(items)
        with self._errors("publish"):
            script = (await self._clients()).scripts["publish"]
            return kombu_publish.counts([await script(args=args) for args in calls])

    def publish_sync(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish on the blocking client of this process: one round trip, no event loop."""
        if not items:
            return []
        calls = self._publish_calls(items)
        client, scripts = self._sync_clients()
        with self._errors("publish"):
            return kombu_publish.counts(self._evalsha_sync(client, scripts["publish"], calls))

    def _publish_calls(self, items: Sequence[Outgoing]) -> list[tuple[Any, ...]]:
        return kombu_publish.publish_calls(
            items, self.names, self.channels.prefix, self.lease_seconds, TAGS
        )

    def put_raw(self, queue: str, payload: bytes, priority: int = 0) -> None:
        """Push raw bytes onto a queue's list, as a foreign producer could: for tests of
        poison messages."""
        client, _ = self._sync_clients()
        with self._errors("put_raw"):
            client.lpush(self.names.glob + queue + self.names.suffix(priority), payload)

    # -- consuming ----------------------------------------------------------------------------
    async def get(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        """Claim up to ``max_count`` messages; between claims wait for one of the lists to
        change (or the next record of ``unacked`` to fall due), at most ``timeout`` seconds."""
        if max_count <= 0 or not queues:
            return []
        wanted = list(dict.fromkeys(queues))
        clients = await self._clients()
        await self._bridges.start(wanted)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        keys = [key for queue in wanted for key in self.names.lists(queue)]
        while True:
            deliveries, next_due, restored = await self._take_cancel_safe(
                clients, wanted, max_count
            )
            if deliveries:
                return deliveries
            if restored:
                continue  # a dead consumer's messages went back: claim them, first in line
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            wait = remaining if next_due is None else min(remaining, next_due + 0.001)
            await self._watch(clients).wait(keys, wait)

    async def _take_cancel_safe(
        self, clients: _LoopClients, queues: list[str], max_count: int
    ) -> tuple[list[Delivery], float | None, int]:
        """Run one take to its end even if the caller is cancelled, then give back its haul."""
        task = asyncio.ensure_future(self._take(clients, queues, max_count))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.abandon(task)
            raise

    async def stop_consuming(self, queue: str) -> None:
        """Stop the subscriptions feeding ``queue`` from fanout exchanges (kombu keeps nothing
        for a queue nobody consumes; a later ``get`` naming it subscribes again), then wait for
        the hauls of cancelled gets to be back, as the native layout does."""
        self._bridges.pause(queue)
        await super().stop_consuming(queue)

    async def _take(
        self, clients: _LoopClients, queues: list[str], max_count: int
    ) -> tuple[list[Delivery], float | None, int]:
        """One claim script call; then restore the expired records it found and dead-letter
        what was delivered too often (errors there are logged: the claim stands). Returns the
        deliveries, when to look again, and how many records were restored."""
        self._rotation += 1
        head, first = TAGS.reserve(max_count)
        names = self.names
        args: list[Any] = [names.own, names.glob, self.lease_seconds, names.unacked]
        args += (names.unacked_index, max_count, self._rotation, head, first)
        args += (len(self._suffixes), *self._suffixes, *queues)
        with self._errors("get"):
            reply = await self._script(clients, "claim", args)
        next_due = float(reply[0]) if reply[0] else None
        expired = reply[2 : 2 + 2 * int(reply[1])]
        flat = reply[2 + len(expired) :]
        deliveries = [
            claimed(bytes(flat[at + 1]).decode(), queues[int(flat[at]) - 1], flat[at + 2])
            for at in range(0, len(flat), 3)
        ]
        restored = 0
        if expired:
            try:
                restored = await kombu_restore.restore(
                    clients.client, clients.scripts["restore"], names, self.lease_seconds, expired
                )
            except Exception as exc:  # a claim in a second finds them again
                logger.warning("could not restore expired messages: %s", exc)
                next_due = 1.0
        over = [d for d in deliveries if _lost(d) > self.max_deliveries]
        if over:
            try:
                self._report_dead_letters(await self._dead_letter_overdelivered(over))
                deliveries = [d for d in deliveries if _lost(d) <= self.max_deliveries]
            except TransportError as exc:
                logger.warning("could not dead-letter %d messages: %s", len(over), exc)
        return deliveries, next_due, restored

    async def _dead_letter_overdelivered(self, over: Sequence[Delivery]) -> list[DeadLetter]:
        """Dead-letter messages taken once more after ``max_deliveries`` deliveries (recorded
        with the deliveries they had, as the native layout does); returns them as letters."""
        records = []
        letters = []
        now = time.time()
        for d in over:
            done = d.delivery_count - 1
            reason = max_deliveries_reason(_lost(d) - 1, self.max_deliveries)
            entry = kombu_restore.dead_entry(reason, done, _id_of(d), d.payload)
            records.append((d.tag, self.names.dlq(d.queue), entry))
            letters.append(DeadLetter(d.queue, d.payload, reason, done, now))
        await self._settle_records("reject", 0, records)
        return letters

    # -- settling -----------------------------------------------------------------------------
    async def _settle_records(
        self, op: str, number: float, records: Sequence[tuple[Any, ...]]
    ) -> None:
        """One settle script call; deliveries whose record is gone are only warned of."""
        if not records:
            return
        names = self.names
        args: list[Any] = [names.own, names.glob, names.unacked, names.unacked_index, op, number]
        for record in records:
            args += record
        with self._errors(op):
            clients = await self._clients()
            stale = await self._script(clients, "settle", args)
        if stale:
            tags = [bytes(tag).decode() for tag in stale]
            logger.warning(
                "%s skipped for %d deliveries no longer held (restored after their "
                "visibility timeout, or already settled): %s",
                op,
                len(tags),
                tags[:10],
            )

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle_records("ack", 0, [(d.tag, "", "") for d in deliveries])

    async def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None:
        """Renew: the record's time becomes now plus ``seconds`` minus the visibility timeout
        (now, by default: kombu's own time of taking it)."""
        held = self.lease_seconds if seconds is None else seconds
        await self._settle_records(
            "extend", held - self.lease_seconds, [(d.tag, "", "") for d in deliveries]
        )

    async def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        records = []
        for d in deliveries:
            entry = kombu_restore.dead_entry(reason, d.delivery_count, _id_of(d), d.payload)
            records.append((d.tag, self.names.dlq(d.queue), entry))
        await self._settle_records("reject", 0, records)

    async def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        """kombu's reject with requeue: marked ``redelivered`` (counted, but apart from the
        deliveries ``max_deliveries`` limits: its worker did not lose it), pushed behind the
        waiting messages; with a ``delay``, a delayed record moved there when it falls due."""
        now: list[tuple[Any, ...]] = []
        later: list[tuple[Any, ...]] = []
        for d in deliveries:
            if d.transport_data.get("poison"):
                now.append((d.tag, d.queue, d.payload))
                continue
            try:
                envelope = json.loads(d.payload)
            except ValueError:  # braces around something else: back as it came
                now.append((d.tag, d.queue, d.payload))
                continue
            list_name = d.queue + self.names.suffix(envelope_priority(envelope))
            payload = restored_envelope(envelope, requeued=True)
            if delay > 0:
                field = due_field(list_name, TAGS.next())
                record = b'[%b, "", %b]' % (payload, json.dumps(d.queue).encode())
                later.append((d.tag, field, record))
            else:
                now.append((d.tag, list_name, payload))
        await self._settle_records("requeue", 0, now)
        await self._settle_records("delay", delay - self.lease_seconds, later)

    # -- inspection ---------------------------------------------------------------------------
    async def _waiting(self, clients: _LoopClients, op: str, queue: str) -> int:
        names = self.names
        lists = [queue + suffix for suffix in self._suffixes]
        pattern = topology.glob_escape(DUE_PREFIX + queue) + "*"
        args: list[Any] = [names.unacked, names.unacked_index, op, pattern, len(lists)]
        args += (*lists, *(names.glob + name for name in lists))
        return int(await clients.scripts["waiting"](args=args))

    async def size(self, queue: str) -> int:
        """The messages in the queue's lists and its delayed ones (not those taken)."""
        with self._errors("size"):
            return await self._waiting(await self._clients(), "size", queue)

    async def purge(self, queue: str) -> int:
        """Remove the messages in the queue's lists and its delayed ones; taken ones stay."""
        with self._errors("purge"):
            return await self._waiting(await self._clients(), "purge", queue)

    def dead_letter_key(self, queue: str) -> str:
        """celeriac's own list of ``queue``'s dead letters (kombu has none); read and removed
        from as the native layout's."""
        return self.names.dlq(queue)

    async def oldest_message_age(self, queue: str) -> float | None:
        """``None``: kombu's lists keep no time per message (nor do Celery's messages carry one
        a worker could read without taking them), so the broker cannot tell cheaply."""
        return None

    async def command_client(self) -> Any:
        """This loop's command client (for the modules beside this one)."""
        return (await self._clients()).client


def _id_of(delivery: Delivery) -> str:
    try:
        return delivery.decode().id
    except DecodeError:
        return str(delivery.tag)


__all__ = ["TAGS", "KombuRedisTransport"]


def _lost(delivery: Delivery) -> int:
    """This delivery and the earlier ones that did not end in a requeue by a living worker."""
    return delivery.delivery_count - int(delivery.transport_data.get("requeues", 0))
