"""Beat's state on the RabbitMQ broker (``amqp://``, ``amqps://``, ``pyamqp://``).

RabbitMQ has no keys to compare-and-set, so the store is built from what it does guarantee:
a single active consumer per queue, a queue that keeps only its newest message, FIFO order, and
messages that go back to their queue when the channel holding them closes. Four durable classic
queues under a prefix ``P`` (``celeriac.beat``, or the ``beat_queue_prefix`` transport option;
one vhost is one app's namespace, as its ``celery`` queue is), declared with the arguments
listed in :mod:`.amqp_queues`.

**Leadership** (:mod:`.amqp_leader`): every beat consumes ``P.leader``
(``x-single-active-consumer``) with prefetch 1 and never acks; the beat a token was delivered
to leads. :meth:`AmqpBeatStore.lead` decides with round trips, never a wait: one proves the
channel holding the token still lives (so a ``True`` from a connection RabbitMQ has closed is
impossible), and when no token is anywhere in sight it publishes one and looks again. A leader
that does not renew within ``ttl`` gives the token up; a dead one loses it when its connection
closes: at once when killed, after about 0.6 ``ttl`` when frozen (the ``ttl`` sets the
connection's heartbeat), within a round trip on resign (measured: :mod:`.amqp_leader`).

RabbitMQ has one active consumer at a time, so two beats never hold a token at once *as the
broker sees it*. What remains is a frozen leader that wakes after its token has moved: until
its next ``lead()`` it may still send tasks through the app's own connection, and RabbitMQ,
unlike the Redis and SQLite brokers, has no deduplication of slot ids to drop such a second
send. The window is the time from its waking to its next ``lead()`` (one scheduler tick).

**State** is one snapshot (:class:`~.amqp_state.Snapshot`: entries, runs, version) written
only by the leader, as one persistent JSON message (zlib above 64 KiB: 10,000 entries take
150 KB), with publisher confirms, to two last-value queues (``x-max-length: 1``,
``x-overflow: drop-head``): ``P.state``, read only by a beat at the moment it becomes leader,
and ``P.view``, peeked at by everyone else. A peek takes the message with ``basic.get`` and
gives it back at once, so for a round trip the queue looks empty to another reader; with a
queue of its own, a new leader never mistakes a peeked snapshot for no state at all (a reader
that finds ``P.view`` empty waits on a consumer, up to 0.2 s, for it to come back). The leader
keeps the state in memory and writes it after every change (:mod:`.amqp_ledger`).

**Changes** go through ``P.commands`` (:mod:`.amqp_commands`): :meth:`~AmqpBeatStore.put_entries`
and :meth:`~AmqpBeatStore.delete_entries` publish a command (the leader's own too, so that all
changes apply in one order: the queue's); the leader takes the waiting commands at each
``lead()``, ``version()``, ``entries()`` and ``runs()``, applies them, writes the snapshot, and
only then acks them. Each command carries its sender and a sequence number: one delivered twice
(the leader died between the write and the ack) is applied once, and one seen before an earlier
one of its sender (that one was briefly out of the queue) waits for it. ``record_runs`` on the
leader writes the snapshot directly; elsewhere it is a command too. A run record never moves
back.

**Consistency.** Changes are durable once the call returns (confirmed) and apply in the queue's
order, each sender's in the order it made them. A store that does not lead reads the last
snapshot plus its own commands not in it yet (read-your-writes), and, while no beat is
subscribed to ``P.leader``, the commands waiting in ``P.commands`` too (peeked: taken and given
back in place), so with no beat running every store sees a change as soon as the call that made
it returns, and the first beat to lead applies it. While beats run, the others' changes reach a
reader when the leader applies them: at its next poll (the scheduler polls ``version()`` every
second). For a few milliseconds while the leader applies a batch, or while another reader peeks
at the snapshot, a reader may see the state as it was a moment before. The version follows what
a store sees, so it changes whenever its entries do. If the state queues were purged, the next
leader starts empty (code-declared entries are synced again; runs restart from scratch).

Connections: one per store, with the broker URL's credentials, TLS and failover
(:func:`~celeriac.transports.amqp.url.connect_first`); errors are
:class:`~celeriac.errors.TransportError` without the password. ``lead()`` answers ``False``
while RabbitMQ is unreachable (logged once per outage); the other methods raise. A store
belongs to the event loop that opened it. Build one with ``AmqpBeatStore(url, options)`` or
:func:`open_store` from an app; then ``await store.open()``. :meth:`AmqpBeatStore.wait_lead`
(not in the contract) lets a standby wait for the token instead of polling for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from celeriac.beat import amqp_queues
from celeriac.beat.amqp_commands import peek_commands
from celeriac.beat.amqp_leader import Expiry, Leadership, heartbeat_for
from celeriac.beat.amqp_ledger import SETTLE_WAIT, Ledger
from celeriac.beat.amqp_queues import BeatQueues
from celeriac.beat.amqp_state import Command, Snapshot
from celeriac.beat.store import BeatStore
from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.transports.amqp.link import Link, on_close
from celeriac.transports.amqp.url import connect_first, parse_amqp_urls
from celeriac.utils.outage import Outage

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac

logger = logging.getLogger("celeriac.beat")
T = TypeVar("T")

DEFAULT_PREFIX = "celeriac.beat"
#: The lease the connection's heartbeat is set for until ``lead()`` names one (issue 14's
#: default), so a store that leads with the default never reconnects to change it.
DEFAULT_LEASE = 10.0


class AmqpBeatStore(BeatStore):
    """:class:`~celeriac.beat.store.BeatStore` on RabbitMQ (see the module docstring).

    ``options`` are the app's ``broker_transport_options`` (TLS, ``login``, ``connect_timeout``;
    ``confirm_timeout`` and ``connect_attempts`` as the transport reads them;
    ``beat_queue_prefix``, the queues' prefix, when ``prefix`` is not given: two apps sharing a
    vhost keep their beats apart with it). A bad URL or option fails here, naming it.
    """

    def __init__(
        self,
        url: str,
        options: Mapping[str, Any] | None = None,
        *,
        prefix: str | None = None,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        options = dict(options or {})
        prefix = prefix or str(options.get("beat_queue_prefix") or DEFAULT_PREFIX)
        self.url = url
        self.targets = parse_amqp_urls(url, options)
        self.timeout = _option(options, "confirm_timeout", 30.0, float)
        self.connect_attempts = max(1, _option(options, "connect_attempts", 3, int))
        if not prefix or len(prefix) > 200:
            raise ImproperlyConfigured(f"beat queue prefix must be 1-200 characters: {prefix!r}")
        self.queues = BeatQueues(prefix)
        self.sender = uuid.uuid4().hex
        self._heartbeat = heartbeat_for(lease)
        self._leadership = Leadership(self.queues.leader, self.timeout)
        self._ledger = Ledger(self.queues, self.timeout)
        self._link: Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()  # one operation at a time on the connection
        self._send_lock = asyncio.Lock()  # commands numbered and sent in one order
        self._seq = 0
        self._pending: list[Command] = []  # sent by this store, not yet in a snapshot seen
        self._outage = Outage("RabbitMQ (beat leader election)", logger)
        self._expiry = Expiry(self._expire)
        self._lapse: asyncio.Task[None] | None = None

    # -- connection ---------------------------------------------------------------------------
    async def open(self) -> None:
        async with self._guard("connecting"):
            await self._connect()

    async def close(self) -> None:
        async with self._lock:
            link, self._link = self._link, None
            if link is not None and self._loop is asyncio.get_running_loop():
                if self._leadership.holds(link):
                    await self._leadership.resign(link)
                await link.close(timeout=2.0)
            self._ledger.forget()
            self._leadership.forget()
            self._expiry.cancel()
        if self._lapse is not None:
            self._lapse.cancel()
            self._lapse = None

    async def _connect(self, heartbeat: int | None = None) -> Link:
        """The live link of this loop; a new one (queues declared) when there is none, it
        broke, or ``lead()`` needs another heartbeat while this store does not lead."""
        loop = asyncio.get_running_loop()
        want = heartbeat or self._heartbeat
        link = self._link
        if link is not None:
            stale = link.broken or self._loop is not loop
            if stale or (want != self._heartbeat and not self._leadership.holds(link)):
                await self._drop()
                link = None
        if link is None:
            targets = [dataclasses.replace(t, heartbeat=want) for t in self.targets]
            connection = await connect_first(targets, attempts=self.connect_attempts)
            link = Link(connection, 0)
            connection.close_callbacks.add(on_close(link))
            self._link, self._loop, self._heartbeat = link, loop, want
            await amqp_queues.declare(link, self.queues)
        return link

    async def _drop(self) -> None:
        """Forget the link (closing it if it is this loop's): the token goes with it."""
        link, self._link = self._link, None
        self._ledger.forget()
        self._leadership.forget()
        self._expiry.cancel()
        if link is not None and self._loop is asyncio.get_running_loop():
            await link.close(timeout=1.0)

    @asynccontextmanager
    async def _guard(self, doing: str) -> AsyncIterator[None]:
        """Serialise the store's operations; a failure drops the link (a half-done exchange
        leaves nothing held: closing returns it all) and is raised as TransportError."""
        async with self._lock:
            try:
                yield
            except (TransportError, ImproperlyConfigured, ValueError):
                await self._drop()
                raise
            except Exception as exc:  # the AMQP client's errors are not importable here
                await self._drop()
                where = self.targets[0].display
                raise TransportError(f"beat store on {where}, {doing}: {exc}") from None

    # -- the lease ----------------------------------------------------------------------------
    async def lead(self, node: str, ttl: float) -> bool:
        asked = asyncio.get_running_loop().time()  # the lease runs from the call, as on Redis
        try:
            async with self._guard("electing the leader"):
                leading = await self._lead(node, ttl)
                self._expiry.renew(asked, ttl)
        except TransportError as exc:
            self._outage.failed(exc, "electing the beat leader")
            return False
        self._outage.ok()
        return leading

    def _expire(self) -> None:
        """No ``lead()`` within ``ttl``: a leader whose connection lives but whose scheduler is
        stuck must not keep the lease (a dead or frozen one loses it with its connection), and
        a standby that stopped asking must not stay subscribed, or RabbitMQ could hand it the
        token to sit on."""
        self._lapse = asyncio.get_running_loop().create_task(self._lapsed())

    async def _lapsed(self) -> None:
        async with self._lock:
            link = self._link
            if link is None or not self._expiry.due():
                return  # asked again while this waited for the lock, or already gone
            if self._leadership.holds(link):
                logger.warning(
                    "beat: %s did not renew its lease in time; giving it up", self._ledger.node
                )
            elif self._leadership.subscribed(link):
                logger.debug("beat: no lead() within the lease; leaving the leader queue")
            else:
                return
            try:
                await self._ledger.step_down()
                await self._leadership.resign(link)
            except Exception as exc:  # a broken link has given the token back already
                logger.debug("beat: giving the lease up: %s", exc)
                await self._drop()

    async def _lead(self, node: str, ttl: float) -> bool:
        link = await self._connect(heartbeat_for(ttl))
        leading = await self._leadership.check(link)
        if not leading:
            await self._ledger.step_down()
        elif self._ledger.state is None:
            await self._ledger.take_over(link, node)
        else:
            await self._ledger.apply_commands(link)
        return leading

    async def wait_lead(self, node: str, ttl: float, timeout: float) -> bool:
        """:meth:`lead`, and if this store does not lead, wait up to ``timeout`` seconds for
        RabbitMQ to hand it the token (a failover), then :meth:`lead` again.

        Not part of the store contract: a standby beat may wait here instead of polling, and
        take over the moment the broker moves the token.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self.lead(node, ttl):
                return True
            remaining = deadline - loop.time()
            link = self._link
            if remaining <= 0:
                return False
            if link is None:  # RabbitMQ unreachable: lead() retries on its own schedule
                await asyncio.sleep(min(remaining, 1.0))
                continue
            # ask again within the lease, or this store would leave the queue (see _expire)
            await self._leadership.wait(link, min(remaining, ttl / 2))

    async def resign(self, node: str) -> None:
        async with self._guard("resigning"):
            link = self._link
            if link is not None and node == self._ledger.node and self._leadership.holds(link):
                await self._ledger.step_down()
                await self._leadership.resign(link)
                logger.info("beat: %s resigned", node)

    # -- entries and runs ---------------------------------------------------------------------
    async def _view(self, doing: str) -> Snapshot:
        """What this store sees: the leader's state (after applying what waits), or the last
        snapshot with the commands waiting for a leader and this store's own on top."""
        async with self._guard(doing):
            link = await self._connect()
            waiting: list[Command] = []
            if self._ledger.state is not None and self._leadership.holds(link):
                await self._ledger.apply_commands(link)
                base = self._ledger.state
            else:
                await self._ledger.step_down()
                base = await amqp_queues.peek(link, self.queues.view, SETTLE_WAIT) or Snapshot()
                if not await amqp_queues.consumers(link, self.queues.leader):
                    # no beat will apply them soon: show them (a leader's are left alone, so
                    # that it sees each sender's commands in order)
                    waiting = await peek_commands(link, self.queues.commands)
            self._pending = [c for c in self._pending if c.seq > base.done(c.sender)]
            return base.view(waiting, self._pending)

    async def version(self) -> int:
        return (await self._view("reading the version")).version

    async def entries(self) -> dict[str, dict[str, Any]]:
        view = await self._view("reading entries")
        # a copy the caller may change without changing the store's (entries are JSON values)
        copied: dict[str, dict[str, Any]] = orjson.loads(orjson.dumps(view.entries))
        return copied

    async def runs(self) -> dict[str, float]:
        return dict((await self._view("reading runs")).runs)

    async def put_entries(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if entries:
            await self._send(lambda seq: Command.put(self.sender, seq, entries), "putting entries")

    async def delete_entries(self, names: Iterable[str]) -> None:
        gone = list(names)
        if gone:
            await self._send(lambda seq: Command.delete(self.sender, seq, gone), "deleting")

    async def record_runs(self, runs: Mapping[str, float]) -> None:
        if not runs:
            return
        try:
            async with self._guard("recording runs"):
                link = await self._connect()
                if self._ledger.state is not None and self._leadership.holds(link):
                    await self._ledger.record_runs(link, runs)
                    return
        except TransportError as exc:  # no longer the leader: the next one applies them
            logger.warning("beat: recording runs as the leader failed (%s); sent instead", exc)
        await self._send(lambda seq: Command.record(self.sender, seq, runs), "recording runs")

    async def _send(self, make: Callable[[int], Command], doing: str) -> None:
        """Publish one command (confirmed); the leader applies it at once.

        Sends are serialised (numbering and publishing under one lock): the leader skips a
        sequence number at or below the last it applied, so a later command overtaking an
        earlier one would lose the earlier. A failed publish is retried once on a new
        connection with the same number (the leader de-duplicates a copy that did land); a
        :class:`TransportError` after that means the change may or may not be applied.
        """
        async with self._send_lock:
            self._seq += 1
            command = make(self._seq)
            body = command.encode()  # a value that is not JSON fails here, before sending
            self._pending.append(command)
            for attempt in (1, 2):
                try:
                    async with self._guard(doing):
                        link = await self._connect()
                        item = (self.queues.commands, body, "command", "utf-8")
                        await amqp_queues.publish(link, [item], self.timeout)
                        if self._ledger.state is not None and self._leadership.holds(link):
                            await self._ledger.apply_commands(link)
                    return
                except TransportError:
                    if attempt == 2:
                        self._pending = [c for c in self._pending if c is not command]
                        # it may or may not have landed: number what follows as a new sender,
                        # so the leader never waits for this number (see amqp_commands)
                        self.sender, self._seq = uuid.uuid4().hex, 0
                        raise


def _option(options: Mapping[str, Any], name: str, default: T, kind: Callable[[Any], T]) -> T:
    value = options.get(name, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            f"broker_transport_options {name!r} must be a {kind.__name__}, not {value!r}"
        ) from None


def open_store(app: Celeriac) -> AmqpBeatStore:
    """The store on ``app``'s RabbitMQ broker (not yet opened: ``await store.open()``)."""
    return AmqpBeatStore(app.broker_url, app.conf.broker_transport_options)


__all__ = ["DEFAULT_PREFIX", "AmqpBeatStore", "open_store"]
