"""The embedded, durable default broker: one SQLite file shared by the processes of one host.

URLs: ``sqlite:///relative/path.db`` (relative to the working directory when the transport is
created), ``sqlite:////absolute/path.db``; a bare ``sqlite://`` means ``./celeriac.db``. The
parent directory is created if missing; the schema is created idempotently on first use.

Options (``broker_transport_options``): ``lease_seconds`` and ``max_deliveries`` (see
:mod:`celeriac.transports.base`), ``busy_timeout`` (ms a writer waits for the lock, 5000),
``synchronous`` (``NORMAL`` by default; ``FULL`` or ``EXTRA`` for power-loss durability) and
``poll_interval`` (the longest pause between looks for other processes' messages, 0.05 s) and
``transient_retention`` (how long a transient message is kept for listeners to read, 60 s).

**Transient fan-out** (events, control requests) goes through two tables of the same file, a
log written only while someone listens and the listeners' rows: see
:mod:`celeriac.transports.sqlite.transient`.

**Deduplication.** A keyed publish (:attr:`~celeriac.transports.base.Outgoing.dedup_key`) is
checked against the ``dedup`` table and recorded in it in the publish's own transaction, so a
crash cannot separate the two and two processes racing one key store it once; a dropped item
counts 0. Each keyed publish also purges a bounded number of expired keys; a batch without
keys runs no dedup statement at all.

**What survives what.** The database runs in WAL mode. Once ``publish`` (or ``ack``...) returns,
its transaction is committed to the WAL file, so it survives the process being killed (even
``kill -9``) and any number of restarts. With ``synchronous=NORMAL`` the WAL is not fsynced at
every commit, so a power loss or OS crash may lose the last transactions before a checkpoint,
but never corrupts the file; ``synchronous=FULL`` trades publish speed for that too.

**Leases.** ``get`` claims messages in one ``BEGIN IMMEDIATE`` transaction: each claimed row gets
a fresh random ``lease_token``, ``delivery_count + 1`` and a lease ending ``lease_seconds`` from
now. The row's ``due_at`` column is its *visibility time*: claiming moves it to the lease's end,
so a consumer that dies simply lets the row become visible again, and it is redelivered with its
count raised. A delivery's ``tag`` is ``(rowid, lease_token)``: ``ack``, ``requeue``, ``reject``
and ``extend`` act only on rows still carrying that token, so a slow consumer whose lease expired
and went to another cannot settle the other's lease (it is skipped with a warning). A message
already lost ``max_deliveries`` times (its lease ran out: its worker died or froze; a requeue by a
living worker does not count) is dead-lettered instead of delivered again.

**Priorities** are 0-9, higher first (clamped to the queue's ``max_priority``); within one
priority messages come in order of visibility time, then id: FIFO for plain sends, and a
delayed or requeued message queues up from the moment it becomes visible. The claim query is
served by the index ``(queue, priority DESC, due_at, id)``, one index seek per priority level.

**Waiting and polling.** A publish or requeue through *this* transport instance (from any
thread) wakes its waiting ``get`` calls at once. Messages from other processes (or other
instances) are found by polling with exponential back-off from 1 ms to ``poll_interval``; the
back-off persists across ``get`` calls and resets when something arrives. Each poll first reads
``PRAGMA data_version`` (it changes only when another connection commits) on a probe connection
of the calling thread that never waits for a lock, and looks at the queues only when it changed
or a delay or lease fell due. So an idle worker makes about 20 checks of a few microseconds a
second, and a message from another process waits at most about ``poll_interval``.

**Threads.** The async methods run their SQL on one dedicated thread per transport with its own
connection, so the event loop never blocks on the database lock (the probe above is the one
exception, and it gives up instead of waiting). ``publish_sync`` needs no event
loop: it uses a connection of the calling thread (a multi-threaded Django producer gets one per
thread). ``close()`` closes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import orjson

from celeriac.errors import ImproperlyConfigured, TransportError
from celeriac.protocol.message import Message
from celeriac.routing import Binding, Exchange, Queue
from celeriac.transports.base import DeadLetter, Delivery, Listener, Outgoing, Transport
from celeriac.transports.sqlite import db as sql
from celeriac.transports.sqlite import transient
from celeriac.transports.topology import (
    Destination,
    QueueInfo,
    Topology,
    Waiters,
    claim_fairly,
    max_deliveries_reason,
)
from celeriac.transports.transient import DEFAULT_BUFFER

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MIN_POLL = 0.001
_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


def database_path(url: str) -> Path:
    """The absolute database path of a ``sqlite://`` URL, or an error naming the right forms."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ImproperlyConfigured(f"not a sqlite URL: {url!r}")
    if "?" in rest or "#" in rest:
        raise ImproperlyConfigured(
            f"broker_url {url!r}: put SQLite options in broker_transport_options, not the URL"
        )
    if rest and not rest.startswith("/"):
        raise ImproperlyConfigured(
            f"broker_url {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    name = rest[1:] or "celeriac.db"
    if name == ":memory:":
        raise ImproperlyConfigured(
            "an in-memory SQLite database cannot be shared between connections: use memory://"
        )
    return Path(os.path.abspath(name))


def open_database(url: str, options: Mapping[str, Any]) -> sql.Database:
    """The broker database of ``url`` with the connection options of ``broker_transport_options``
    (``busy_timeout``, ``synchronous``) checked, each bad one named: the transport's, and that
    of anything else keeping state in the broker's file (beat's store). Nothing is opened yet."""
    path = database_path(url)
    try:
        busy_timeout = int(options.get("busy_timeout", 5000))
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"broker_transport_options 'busy_timeout': {exc}") from exc
    if busy_timeout < 0:
        raise ImproperlyConfigured("broker_transport_options 'busy_timeout' must be >= 0")
    synchronous = str(options.get("synchronous", "NORMAL")).upper()
    if synchronous not in _SYNCHRONOUS:
        raise ImproperlyConfigured(
            f"broker_transport_options 'synchronous' must be one of {sorted(_SYNCHRONOUS)}"
        )
    return sql.Database(path, busy_timeout, synchronous)


@dataclass(frozen=True, slots=True)
class _Look:
    """What one look at the queues found (run on the transport's SQL thread)."""

    deliveries: list[Delivery]
    next_due: float | None  # the earliest visibility time in these queues, if any
    dead: list[DeadLetter] = field(default_factory=list)  # dead-lettered by this claim


def _json_object(arguments: Mapping[str, Any]) -> str:
    """A binding's arguments as stored: sorted keys, so equal arguments are equal text."""
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode()


class SQLiteTransport(Transport):
    """The SQLite broker (see the module docstring for semantics and options)."""

    schemes: ClassVar[tuple[str, ...]] = ("sqlite",)
    native_sync_publish: ClassVar[bool] = True
    deduplicates: ClassVar[bool] = True

    def __init__(self, url: str = "sqlite://", **options: Any) -> None:
        super().__init__(url, **options)
        self._db = open_database(url, options)
        self.path = self._db.path
        self.busy_timeout = self._db.busy_timeout
        self.synchronous = self._db.synchronous
        try:
            self.poll_interval = float(options.get("poll_interval", 0.05))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"broker_transport_options 'poll_interval': {exc}") from exc
        if self.poll_interval <= 0:
            raise ImproperlyConfigured("broker_transport_options 'poll_interval' must be > 0")
        try:
            self.transient_retention = float(options.get("transient_retention", 60.0))
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"broker_transport_options 'transient_retention': {exc}"
            ) from exc
        if self.transient_retention <= 0:
            raise ImproperlyConfigured("broker_transport_options 'transient_retention' must be > 0")
        self._listeners: set[transient.SQLiteListener] = set()
        self._transient_waiters = Waiters()
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._waiters = Waiters()
        self._topology: tuple[int, Topology] | None = None
        self._auto_delete: set[str] = set()
        self._rotation = 0
        #: the looks of cancelled gets still running (their haul is requeued when they end)
        self._abandoned: set[asyncio.Future[_Look]] = set()
        # the polling back-off outlives one get(): a worker calling get(timeout=1) in a loop on
        # an idle queue stays at poll_interval instead of ramping up from 1 ms every second
        self._pause = _MIN_POLL

    @property
    def database(self) -> sql.Database:
        """The broker's database (for the modules that keep state in its file)."""
        return self._db

    async def run_sql(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on this transport's SQL thread (for the modules beside it)."""
        return await self._run(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on this transport's SQL thread."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="celeriac-sqlite")
            executor = self._executor
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(fn, *args))

    # -- life cycle ---------------------------------------------------------------------------
    async def connect(self) -> None:
        await self._run(self._db.conn)

    async def close(self) -> None:
        """Close this instance's listeners, delete its auto-delete queues, then close the thread
        and connections."""
        await transient.close_all(sorted(self._listeners, key=lambda x: x.id))
        for name in sorted(self._auto_delete):
            await self.delete_queue(name)
        self._auto_delete.clear()
        with self._lock:
            executor, self._executor = self._executor, None
            self._topology = None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._db.close()

    # -- topology -----------------------------------------------------------------------------
    def _load_topology(self, conn: sqlite3.Connection, cached: bool = True) -> Topology:
        """The stored topology; the cached copy while no declaration bumped its version.

        The cached copy is shared by threads and never changed in place: changes work on a
        fresh copy (``cached=False``).
        """
        version = conn.execute(sql.GET_META, ("topology_version",)).fetchone()[0]
        held = self._topology
        if cached and held is not None and held[0] == version:
            return held[1]
        topology = Topology.from_rows(
            conn.execute(sql.SELECT_EXCHANGES).fetchall(),
            [QueueInfo(n, p, bool(a)) for n, p, a in conn.execute(sql.SELECT_QUEUES)],
            [
                Binding(ex, queue, key, orjson.loads(args) if args else {})
                for ex, queue, key, args in conn.execute(sql.SELECT_BINDINGS)
            ],
        )
        if cached:
            self._topology = (version, topology)
        return topology

    def _change_topology(
        self, change: Callable[[Topology], bool], also: tuple[str, tuple[Any, ...]] | None = None
    ) -> None:
        """Apply one validated change, and the statement ``also``, in one write transaction.

        The topology is a few rows and changes rarely, so a change rewrites all of it: simpler
        than a statement per kind of change, and it keeps binding order as declared.
        """
        with self._db.write() as conn:
            if also is not None:
                conn.execute(*also)
            topology = self._load_topology(conn, cached=False)
            if change(topology):
                for statement in sql.CLEAR_TOPOLOGY:
                    conn.execute(statement)
                conn.executemany(sql.INSERT_EXCHANGE, topology.exchanges.items())
                conn.executemany(
                    sql.INSERT_QUEUE,
                    [(q.name, q.max_priority, q.auto_delete) for q in topology.queues.values()],
                )
                conn.executemany(
                    sql.INSERT_BINDING,
                    [
                        (b.exchange, b.queue, b.routing_key, _json_object(b.arguments))
                        for b in topology.bindings()
                    ],
                )
                conn.execute(sql.BUMP_TOPOLOGY)
        self._topology = None

    async def declare_exchange(self, exchange: Exchange) -> None:
        await self._run(self._change_topology, lambda t: t.declare_exchange(exchange))

    async def declare_queue(self, queue: Queue) -> None:
        await self._run(self._change_topology, lambda t: t.declare_queue(queue))
        if queue.auto_delete:
            self._auto_delete.add(queue.name)

    async def bind(self, binding: Binding) -> None:
        await self._run(self._change_topology, lambda t: t.bind(binding))

    async def unbind(self, binding: Binding) -> None:
        await self._run(self._change_topology, lambda t: t.unbind(binding))

    async def delete_queue(self, name: str) -> None:
        """Remove the queue, its messages and bindings; its dead letters stay for inspection."""
        also = (sql.DELETE_QUEUE_MESSAGES, (name,))
        await self._run(self._change_topology, lambda t: t.delete_queue(name), also)
        self._auto_delete.discard(name)

    # -- producing ----------------------------------------------------------------------------
    async def publish_batch(self, items: Sequence[Outgoing]) -> list[int]:
        return await self._run(self.publish_sync, items)

    def publish_sync(self, items: Sequence[Outgoing]) -> list[int]:
        """Publish in one transaction on the calling thread's connection; no event loop.

        Keyed items (:attr:`Outgoing.dedup_key`) are checked and their keys recorded in the same
        transaction as the insert: one whose key is recorded and unexpired is dropped and counts
        0 (it reached no queue through this call); an unroutable one records nothing.
        """
        payloads = [item.message.to_wire() for item in items]
        keyed = [i for i, item in enumerate(items) if item.dedup_key is not None]
        now = time.time()
        with self._db.write() as conn:
            plans = self._load_topology(conn).plan(items)
            if keyed:
                plans = self._deduplicate(conn, items, keyed, plans, now)
            rows = [
                (
                    dest.queue,
                    dest.priority,
                    now if item.due_at is None or item.due_at < now else item.due_at,
                    payload,
                    item.exchange,
                    item.routing_key,
                    now,
                )
                for item, payload, plan in zip(items, payloads, plans, strict=True)
                for dest in plan
            ]
            conn.executemany(sql.INSERT_MESSAGE, rows)
        if rows:
            self._waiters.notify_all()
        return [len(plan) for plan in plans]

    @staticmethod
    def _deduplicate(
        conn: sqlite3.Connection,
        items: Sequence[Outgoing],
        keyed: list[int],
        plans: list[list[Destination]],
        now: float,
    ) -> list[list[Destination]]:
        """The plans with the keyed items whose key is recorded emptied, recording the others'
        (inside the publish transaction); expired keys are purged a bounded number at a time."""
        conn.execute(sql.PURGE_DEDUP, (now, max(1000, 2 * len(keyed))))
        plans = list(plans)
        for index in keyed:
            item = items[index]
            if not plans[index] or item.dedup_ttl <= 0:
                continue
            until = now + item.dedup_ttl
            if conn.execute(sql.RECORD_DEDUP, (item.dedup_key, until, now)).fetchone() is None:
                plans[index] = []
        return plans

    # -- transient fan-out --------------------------------------------------------------------
    async def publish_transient(
        self, exchange: Exchange, routing_key: str, messages: Sequence[Message]
    ) -> None:
        if not messages:
            return
        written = await self._run(transient.publish, self, exchange.name, routing_key, messages)
        if written:
            self._transient_waiters.notify_all()

    def listen(
        self, exchange: Exchange, patterns: Sequence[str] = ("#",), *, buffer: int = DEFAULT_BUFFER
    ) -> Listener:
        return transient.SQLiteListener(self, self._transient_waiters, exchange, patterns, buffer)

    def opened(self, listener: transient.SQLiteListener) -> None:
        """A listener of this instance opened (it is closed with the transport)."""
        self._listeners.add(listener)

    def closed(self, listener: transient.SQLiteListener) -> None:
        self._listeners.discard(listener)

    # -- consuming ----------------------------------------------------------------------------
    async def get(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_count`` messages, waiting up to ``timeout`` for the first.

        Woken at once by publishes and requeues through this instance; otherwise polls with
        back-off (see the module docstring). If the caller is cancelled while a claim is in
        flight, the claimed messages are requeued rather than left to their lease's expiry.
        """
        if max_count <= 0 or not queues:
            return []
        wanted = list(dict.fromkeys(queues))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        waiter = self._waiters.register()
        try:
            force, version, next_due = True, None, None
            while True:
                waiter.clear()
                current = self._db.data_version()  # read before looking: no change is missed
                if next_due is not None and time.time() >= next_due:
                    force = True
                if force or current is None or current != version:
                    look = await self._look_cancel_safe(wanted, max_count)
                    self._report_dead_letters(look.dead)
                    if look.deliveries:
                        self._pause = _MIN_POLL
                        return look.deliveries
                    version, next_due = current, look.next_due
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                wait = min(self._pause, remaining)
                if next_due is not None:
                    wait = min(wait, max(next_due - time.time(), 0.0) + _MIN_POLL)
                force = await waiter.wait(wait)
                self._pause = _MIN_POLL if force else min(self._pause * 2, self.poll_interval)
        finally:
            self._waiters.unregister(waiter)

    async def _look_cancel_safe(self, queues: list[str], max_count: int) -> _Look:
        task = asyncio.ensure_future(self._run(self._look, queues, max_count))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._release_abandoned)
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
            raise

    def _release_abandoned(self, task: asyncio.Future[_Look]) -> None:
        """Requeue what a cancelled get() claimed, so it need not wait for its lease to end."""
        if task.cancelled() or task.exception() is not None:
            return
        self._report_dead_letters(task.result().dead)
        if not task.result().deliveries:
            return
        abandoned = task.result().deliveries

        def give_back() -> None:
            try:
                self._settle(abandoned, "requeue", sql.REQUEUE, (time.time(),))
            except TransportError:
                logger.warning("could not requeue %d abandoned deliveries", len(abandoned))
                return
            self._waiters.notify_all()

        executor = self._executor
        if executor is not None:
            with contextlib.suppress(RuntimeError):  # shut down meanwhile: leases will expire
                executor.submit(give_back)

    def _look(self, queues: list[str], max_count: int) -> _Look:
        """One look at the queues, on the SQL thread: a cheap peek, then a claim if worth it."""
        conn = self._db.conn()
        now = time.time()
        with self._db.errors():
            earliest = self._earliest(conn, queues)
        if earliest is None or earliest > now:
            return _Look([], earliest)  # nothing visible: no write lock taken
        token = secrets.token_hex(8)
        self._rotation += 1
        dead: list[DeadLetter] = []
        with self._db.transaction(conn):
            deliveries = claim_fairly(
                queues,
                max_count,
                self._rotation,
                lambda queue, count: self._claim(conn, queue, count, now, token, dead),
            )
        with self._db.errors():
            next_due = None if deliveries else self._earliest(conn, queues)
        return _Look(deliveries, next_due, dead)

    @staticmethod
    def _earliest(conn: sqlite3.Connection, queues: list[str]) -> float | None:
        """The earliest visibility time in these queues (index seeks, no scan)."""
        found = [conn.execute(sql.EARLIEST, (queue,)).fetchone()[0] for queue in queues]
        earliest = min(found, default=sql.NEVER)
        return None if earliest >= sql.NEVER else float(earliest)

    def _claim(
        self,
        conn: sqlite3.Connection,
        queue: str,
        count: int,
        now: float,
        token: str,
        dead: list[DeadLetter],
    ) -> list[Delivery]:
        """Lease up to ``count`` visible rows of one queue (inside the claim transaction);
        rows past ``max_deliveries`` are dead-lettered and added to ``dead`` instead (the
        transaction may still roll back: they are reported only once it has committed)."""
        until = now + self.lease_seconds
        out: list[Delivery] = []
        while len(out) < count:
            rows = conn.execute(sql.CLAIM_SELECT, (queue, now, count - len(out))).fetchall()
            # r[6]: leases that ran out, this one included (requeues do not count)
            good = [r for r in rows if r[6] < self.max_deliveries]
            poison = [r for r in rows if r[6] >= self.max_deliveries]
            for chunk in sql.chunks([r[0] for r in good]):
                conn.execute(sql.in_ids(sql.LEASE, len(chunk)), (token, until, until, *chunk))
            out.extend(
                Delivery(
                    tag=(row_id, token),
                    queue=queue,
                    payload=payload,
                    delivery_count=count_before + 1,
                    transport_data={"exchange": ex, "routing_key": key, "priority": priority},
                )
                for row_id, payload, count_before, priority, ex, key, _ in good
            )
            if poison:
                letters = [
                    (r[0], max_deliveries_reason(r[6], self.max_deliveries), now) for r in poison
                ]
                conn.executemany(sql.DEAD_LETTER_BY_ID, letters)
                dead.extend(
                    DeadLetter(queue, r[1], reason, r[2], now)
                    for r, (_, reason, _) in zip(poison, letters, strict=True)
                )
                for chunk in sql.chunks([r[0] for r in poison]):
                    conn.execute(sql.in_ids(sql.DELETE_BY_ID, len(chunk)), chunk)
                logger.info(
                    "%d messages of %r dead-lettered: %s", len(poison), queue, letters[0][1]
                )
            if not poison:
                break
        return out

    def _settle(
        self,
        deliveries: Sequence[Delivery],
        action: str,
        statement: str,
        leading: tuple[Any, ...] = (),
        then: Callable[[sqlite3.Connection, list[Any]], None] | None = None,
    ) -> None:
        """Run ``statement`` (``... WHERE lease_token = ? AND id IN ({ids}) RETURNING id ...``)
        for the whole batch, then ``then`` on the returned rows, in one transaction.

        Deliveries whose token no longer matches are skipped with a warning, so that a stale
        consumer never settles a lease that has since gone to another.
        """
        by_token: dict[str, list[int]] = {}
        for delivery in deliveries:
            row_id, token = delivery.tag
            by_token.setdefault(token, []).append(row_id)
        returned: list[Any] = []
        with self._db.write() as conn:
            for token, ids in by_token.items():
                for chunk in sql.chunks(ids):
                    query = sql.in_ids(statement, len(chunk))
                    returned.extend(conn.execute(query, (*leading, token, *chunk)).fetchall())
            if then is not None and returned:
                then(conn, returned)
        if len(returned) < len(deliveries):
            held = {row[0] for row in returned}
            stale = [d.tag for d in deliveries if d.tag[0] not in held]
            logger.warning(
                "%s skipped for %d deliveries no longer held (lease expired and re-leased, "
                "or already settled): %s",
                action,
                len(stale),
                stale[:10],
            )

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            await self._run(self._settle, deliveries, "ack", sql.ACK)

    async def requeue(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        if deliveries:
            due = time.time() + max(delay, 0.0)
            await self._run(self._settle, deliveries, "requeue", sql.REQUEUE, (due,))
            self._waiters.notify_all()

    async def reject(self, deliveries: Sequence[Delivery], reason: str) -> None:
        if not deliveries:
            return
        now = time.time()

        def record(conn: sqlite3.Connection, rows: list[Any]) -> None:
            letters = [(queue, payload, reason, n, now, i) for i, queue, payload, n in rows]
            conn.executemany(sql.INSERT_DEAD_LETTER, letters)

        await self._run(self._settle, deliveries, "reject", sql.REJECT, (), record)

    async def extend(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> None:
        if deliveries:
            until = time.time() + (self.lease_seconds if seconds is None else seconds)
            await self._run(self._settle, deliveries, "extend", sql.EXTEND, (until, until))

    # -- inspection ---------------------------------------------------------------------------
    def _modify(self, query: str, *args: Any) -> int:
        with self._db.write() as conn:
            return int(conn.execute(query, args).rowcount)

    async def size(self, queue: str) -> int:
        return int((await self._run(self._db.read, sql.SIZE, queue, time.time()))[0][0])

    async def purge(self, queue: str) -> int:
        """Remove the waiting messages (due, delayed or with an expired lease); leased ones stay."""
        return await self._run(self._modify, sql.PURGE, queue, time.time())

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        rows = await self._run(self._db.read, sql.SELECT_DEAD_LETTERS, queue, max(limit, 0))
        return [
            DeadLetter(queue, payload, reason, count, failed_at, str(row_id))
            for queue, payload, reason, count, failed_at, row_id in rows
        ]

    async def remove_dead_letters(self, queue: str, letters: Sequence[DeadLetter]) -> int:
        """Delete the rows of ``queue``'s dead letters with these ids, in one transaction."""
        ids = sorted({int(text) for letter in letters if (text := _row_id(letter.id))})
        if not ids:
            return 0

        def delete() -> int:
            removed = 0
            with self._db.write() as conn:
                for chunk in sql.chunks(ids):
                    query = sql.in_ids(sql.DELETE_DEAD_LETTERS, len(chunk))
                    removed += conn.execute(query, (queue, *chunk)).rowcount
            return removed

        return await self._run(delete)

    async def oldest_message_age(self, queue: str) -> float | None:
        """Seconds since the longest-waiting ready message became visible (``due_at``, its
        visibility time: published, fell due, requeued, or its lease ended); 0.0 when none is.
        The earliest ``due_at`` of the queue is one index seek per priority, and when it is
        not in the future it is that message's."""
        earliest = await self._run(self._earliest_of, queue)
        now = time.time()
        return 0.0 if earliest is None or earliest > now else now - earliest

    def _earliest_of(self, queue: str) -> float | None:
        with self._db.errors():
            return self._earliest(self._db.conn(), [queue])

    async def stop_consuming(self, queue: str) -> None:
        """Nothing is held between two ``get`` calls; what a cancelled ``get`` claimed is
        requeued on the SQL thread, so this waits for that thread to pass every requeue
        already asked of it."""
        pending = list(self._abandoned)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        with self._lock:
            running = self._executor is not None
        if running:
            await self._run(_nothing)


def _row_id(text: str | None) -> str | None:
    """A letter id if it is one of this broker's (a row id), else None."""
    return text if text is not None and text.isdigit() else None


def _nothing() -> None:
    """Run on the SQL thread to wait for what was queued there before."""


__all__ = ["SQLiteTransport", "database_path", "open_database"]
