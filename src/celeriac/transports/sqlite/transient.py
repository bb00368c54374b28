"""Transient fan-out on the SQLite broker: events and control requests between the processes of
one host, through the broker's own file.

SQLite has no push, so the design is a short-lived log that is written only for someone:

* ``listeners``: one row per open listener (exchange, exchange type, patterns, pid), its
  ``heartbeat_at`` refreshed every :data:`HEARTBEAT` seconds. A row not refreshed for
  :data:`EXPIRY` seconds is a dead process's and counts for nothing (and is deleted by the next
  listener that opens or beats);
* ``transient``: one row per message (exchange, routing key, kombu envelope, time), appended by
  :func:`publish` only when a live listener takes the routing key. The read that decides it
  takes no lock, so with nobody listening a publish costs one indexed read and writes nothing;
* each listener polls by row id, from the last id at the moment it registered (taken in the
  registering transaction, so nothing published after :meth:`SQLiteListener.open` returns is
  missed), with the transport's back-off (1 ms doubling to ``poll_interval``, 50 ms by default)
  and a ``PRAGMA data_version`` check first, so an idle poll costs microseconds; a publish
  through the same transport instance wakes its listeners at once;
* rows older than ``transient_retention`` seconds (60) are deleted by publishers, a bounded
  number per publish, oldest first by id (no index on time is needed: ids grow with time), and
  all of them when the last listener of the file closes. A listener stuck for longer than that
  (its process frozen) loses what it had not read.

Row ids are in commit order: SQLite has one writer at a time and ``AUTOINCREMENT`` never reuses
an id, so "every row after id N" is exactly what was committed after N. A listener reads on its
own event loop's thread with a connection that never waits for a lock (WAL readers need none);
only its registration, heartbeats and removal go through the transport's SQL thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from celeriac.protocol.message import Message
from celeriac.routing import Exchange
from celeriac.transports.topology import Waiters
from celeriac.transports.transient import InboxListener, accepts, envelope

if TYPE_CHECKING:
    from celeriac.transports.sqlite.transport import SQLiteTransport

logger = logging.getLogger(__name__)

#: Seconds between a listener's heartbeats, and without one after which it counts as gone.
HEARTBEAT = 5.0
EXPIRY = 30.0
_MIN_POLL = 0.001
_READ_ROWS = 1000  # rows per read: a listener far behind catches up in bounded steps
_PURGE_ROWS = 5000  # expired rows deleted per publish at most
_READ_PATIENCE = 5.0  # seconds of failed reads before a warning

LIVE_LISTENERS = (
    "SELECT exchange_type, patterns FROM listeners WHERE exchange = ? AND heartbeat_at > ?"
)
INSERT = "INSERT INTO transient (exchange, routing_key, envelope, created_at) VALUES (?, ?, ?, ?)"
OLDEST = "SELECT created_at FROM transient ORDER BY id LIMIT 1"
PURGE = (
    "DELETE FROM transient WHERE id IN (SELECT id FROM transient ORDER BY id LIMIT ?)"
    " AND created_at < ?"
)
LAST_ID = "SELECT coalesce(max(id), 0) FROM transient"
REGISTER = (
    "INSERT OR REPLACE INTO listeners (id, exchange, exchange_type, patterns, pid, heartbeat_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
BEAT = "UPDATE listeners SET heartbeat_at = ? WHERE id = ?"
FORGET_STALE = "DELETE FROM listeners WHERE heartbeat_at <= ?"
UNREGISTER = "DELETE FROM listeners WHERE id = ?"
ANY_LISTENER = "SELECT 1 FROM listeners WHERE heartbeat_at > ? LIMIT 1"
EMPTY_LOG = "DELETE FROM transient"
READ = (
    "SELECT id, routing_key, envelope FROM transient"
    " WHERE id > ? AND id <= ? AND exchange = ? ORDER BY id LIMIT ?"
)


@functools.lru_cache(maxsize=1024)
def _patterns(text: str) -> tuple[str, ...]:
    return tuple(orjson.loads(text))


def publish(
    transport: SQLiteTransport, exchange: str, routing_key: str, messages: Sequence[Message]
) -> int:
    """Append ``messages`` if a live listener takes ``routing_key`` (on the SQL thread); how
    many rows were written."""
    db = transport.database
    now = time.time()
    with db.errors():
        live = db.conn().execute(LIVE_LISTENERS, (exchange, now - EXPIRY)).fetchall()
    if not any(accepts(kind, _patterns(text), routing_key) for kind, text in live):
        return 0  # nobody listens: nothing written, no lock taken
    rows = [(exchange, routing_key, envelope(m, exchange, routing_key), now) for m in messages]
    with db.write() as conn:
        conn.executemany(INSERT, rows)
        oldest = conn.execute(OLDEST).fetchone()
        if oldest is not None and oldest[0] < now - transport.transient_retention:
            conn.execute(PURGE, (_PURGE_ROWS, now - transport.transient_retention))
    return len(rows)


class SQLiteListener(InboxListener[bytes]):
    """One listener on the SQLite broker (see the module docstring)."""

    def __init__(
        self,
        transport: SQLiteTransport,
        waiters: Waiters,
        exchange: Exchange,
        patterns: Sequence[str],
        buffer: int,
    ) -> None:
        super().__init__(exchange, patterns, buffer)
        self.transport = transport
        self.id = uuid.uuid4().hex
        self._waiters = waiters
        self._cursor = 0
        self._pump: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- registration (on the transport's SQL thread) ------------------------------------------
    def _register(self) -> int:
        now = time.time()
        patterns = orjson.dumps(list(self.patterns)).decode()
        row = (self.id, self.exchange.name, self.exchange.type, patterns, os.getpid(), now)
        with self.transport.database.write() as conn:
            conn.execute(FORGET_STALE, (now - EXPIRY,))
            conn.execute(REGISTER, row)
            return int(conn.execute(LAST_ID).fetchone()[0])

    def _heartbeat(self) -> None:
        now = time.time()
        with self.transport.database.write() as conn:
            if conn.execute(BEAT, (now, self.id)).rowcount == 0:  # deleted as stale meanwhile
                patterns = orjson.dumps(list(self.patterns)).decode()
                conn.execute(
                    REGISTER,
                    (self.id, self.exchange.name, self.exchange.type, patterns, os.getpid(), now),
                )
            conn.execute(FORGET_STALE, (now - EXPIRY,))

    def _unregister(self) -> None:
        """Delete the row; the last listener of the file to leave empties the log as well."""
        with self.transport.database.write() as conn:
            conn.execute(UNREGISTER, (self.id,))
            if conn.execute(ANY_LISTENER, (time.time() - EXPIRY,)).fetchone() is None:
                conn.execute(EMPTY_LOG)

    # -- life cycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pump is not None:
            return
        self._cursor = await self.transport.run_sql(self._register)
        try:
            with self.transport.database.errors():
                conn = self._connect()
        except BaseException:
            await self.transport.run_sql(self._unregister)
            raise
        self._loop = asyncio.get_running_loop()
        self._pump = self._loop.create_task(self._read_loop(conn))
        self._beat = self._loop.create_task(self._beat_loop())
        self.transport.opened(self)

    async def close(self) -> None:
        """Stop reading and delete the listener's row (nothing of it stays in the file)."""
        self.inbox.close()
        tasks = [t for t in (self._pump, self._beat) if t is not None]
        self._pump = self._beat = None
        if not tasks:
            return
        loop = asyncio.get_running_loop()
        for task in tasks:
            if self._loop is loop:
                task.cancel()
            elif self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(task.cancel)
        if self._loop is loop:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.transport.closed(self)
        try:
            await self.transport.run_sql(self._unregister)
        except Exception as exc:  # the file went away: nothing left to release
            logger.warning("could not remove listener %s from %s: %s", self.id, self.transport, exc)

    # -- reading (on the listener's loop) -------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """A connection of this loop's thread that reads and never waits for a lock."""
        return sqlite3.connect(
            self.transport.database.path, timeout=0, isolation_level=None, check_same_thread=False
        )

    def _read(self, conn: sqlite3.Connection) -> tuple[list[bytes], bool]:
        """The envelopes this listener takes among the rows committed since its cursor, and
        whether more rows may be waiting (a full read)."""
        high = int(conn.execute(LAST_ID).fetchone()[0])
        if high <= self._cursor:
            return [], False
        rows = conn.execute(READ, (self._cursor, high, self.exchange.name, _READ_ROWS)).fetchall()
        full = len(rows) == _READ_ROWS
        self._cursor = int(rows[-1][0]) if full else high
        return [bytes(env) for _, key, env in rows if self.accepts(key)], full

    async def _read_loop(self, conn: sqlite3.Connection) -> None:
        waiter = self._waiters.register()
        pause, seen = _MIN_POLL, -1
        failing_since: float | None = None  # a moment's "busy" is routine; a long one is not
        warned = False
        try:
            while True:
                waiter.clear()
                full = False
                try:
                    version = int(conn.execute("PRAGMA data_version").fetchone()[0])
                    if version != seen:
                        found, full = self._read(conn)
                        seen = -1 if full else version
                        if found:
                            self.inbox.put_many(found)
                            pause = _MIN_POLL
                    if warned:
                        logger.warning("listener on %s reads again", self.transport)
                    failing_since, warned = None, False
                except sqlite3.Error as exc:  # busy (a checkpoint) or gone: look again later
                    now = time.monotonic()
                    failing_since = now if failing_since is None else failing_since
                    if not warned and now - failing_since >= _READ_PATIENCE:
                        logger.warning("listener on %s cannot read: %s", self.transport, exc)
                        warned = True
                if full:
                    await asyncio.sleep(0)  # let the reader take some before reading on
                    continue
                woken = await waiter.wait(pause)
                pause = _MIN_POLL if woken else min(pause * 2, self.transport.poll_interval)
        finally:
            self._waiters.unregister(waiter)
            conn.close()

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)  # a periodic heartbeat, not a wait for an event
            try:
                await self.transport.run_sql(self._heartbeat)
            except Exception as exc:
                logger.warning(
                    "listener %s on %s missed a heartbeat: %s", self.id, self.transport, exc
                )


async def close_all(listeners: Sequence[SQLiteListener]) -> None:
    """Close listeners (a transport closing), each even if another fails."""
    for listener in listeners:
        with contextlib.suppress(Exception):
            await listener.close()


__all__ = ["EXPIRY", "HEARTBEAT", "SQLiteListener", "close_all", "publish"]
