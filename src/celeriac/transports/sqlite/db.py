"""The SQLite broker's database: schema, statements, and one connection per thread.

Used only by :mod:`celeriac.transports.sqlite`, which documents the semantics; kept apart so
that the schema and every query can be read side by side, and the transport reads as what it
does rather than how it talks to SQLite. ``due_at`` is a message's *visibility time*: when it is
due, or, while leased, when its lease ends.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from celeriac.errors import TransportError
from celeriac.utils.sqlite_wal import enable_wal

logger = logging.getLogger(__name__)

_CHUNK = 5000  # ids per "IN (...)" list, far below SQLite's limit on bound parameters
SCHEMA_VERSION = 1
NEVER = 1e308
# ``arguments``: the binding's arguments as a JSON object (headers exchanges match on them).
BINDINGS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {name} (exchange TEXT NOT NULL, queue TEXT NOT NULL,"
    " routing_key TEXT NOT NULL, arguments TEXT NOT NULL DEFAULT '{{}}',"
    " UNIQUE (exchange, queue, routing_key, arguments))"
)
# Databases made before bindings had arguments: the table is rebuilt (SQLite cannot drop the
# old UNIQUE constraint in place, and it would refuse two headers bindings of one queue), rows
# kept in order. Older celeriacs still read and write the new table; they ignore ``arguments``.
ADD_BINDING_ARGUMENTS = (
    "ALTER TABLE bindings RENAME TO bindings_v1",
    BINDINGS_TABLE.format(name="bindings"),
    "INSERT INTO bindings (exchange, queue, routing_key)"
    " SELECT exchange, queue, routing_key FROM bindings_v1 ORDER BY rowid",
    "DROP TABLE bindings_v1",
)
# Databases made before ``lost`` (leases that ran out: what ``max_deliveries`` counts; a requeue
# by a living worker does not) gain the column; older celeriacs ignore it.
ADD_LOST = "ALTER TABLE messages ADD COLUMN lost INTEGER NOT NULL DEFAULT 0"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS exchanges (name TEXT PRIMARY KEY, type TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY,"
    " max_priority INTEGER NOT NULL, auto_delete INTEGER NOT NULL)",
    BINDINGS_TABLE.format(name="bindings"),
    "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " queue TEXT NOT NULL, priority INTEGER NOT NULL, due_at REAL NOT NULL,"
    " lease_until REAL, lease_token TEXT, delivery_count INTEGER NOT NULL DEFAULT 0,"
    " payload BLOB NOT NULL, exchange TEXT NOT NULL, routing_key TEXT NOT NULL,"
    " created_at REAL NOT NULL, lost INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS messages_claim ON messages (queue, priority DESC, due_at, id)",
    "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " queue TEXT NOT NULL, payload BLOB NOT NULL, reason TEXT NOT NULL,"
    " delivery_count INTEGER NOT NULL, failed_at REAL NOT NULL, message_id INTEGER)",
    "CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id)",
    # dedup keys (Outgoing.dedup_key) recorded by publishes, until they expire
    "CREATE TABLE IF NOT EXISTS dedup (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at)",
    # transient fan-out (events, control requests): see celeriac.transports.sqlite.transient
    "CREATE TABLE IF NOT EXISTS transient (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " exchange TEXT NOT NULL, routing_key TEXT NOT NULL, envelope BLOB NOT NULL,"
    " created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS listeners (id TEXT PRIMARY KEY, exchange TEXT NOT NULL,"
    " exchange_type TEXT NOT NULL, patterns TEXT NOT NULL, pid INTEGER NOT NULL,"
    " heartbeat_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS listeners_exchange ON listeners (exchange, heartbeat_at)",
)
INIT_META = "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)"
GET_META = "SELECT value FROM meta WHERE key = ?"
BUMP_TOPOLOGY = "UPDATE meta SET value = value + 1 WHERE key = 'topology_version'"
SELECT_EXCHANGES = "SELECT name, type FROM exchanges"
SELECT_QUEUES = "SELECT name, max_priority, auto_delete FROM queues"
SELECT_BINDINGS = "SELECT exchange, queue, routing_key, arguments FROM bindings ORDER BY rowid"
CLEAR_TOPOLOGY = ("DELETE FROM exchanges", "DELETE FROM queues", "DELETE FROM bindings")
INSERT_EXCHANGE = "INSERT INTO exchanges (name, type) VALUES (?, ?)"
INSERT_QUEUE = "INSERT INTO queues (name, max_priority, auto_delete) VALUES (?, ?, ?)"
INSERT_BINDING = (
    "INSERT INTO bindings (exchange, queue, routing_key, arguments) VALUES (?, ?, ?, ?)"
)
DELETE_QUEUE_MESSAGES = "DELETE FROM messages WHERE queue = ?"
INSERT_MESSAGE = (
    "INSERT INTO messages (queue, priority, due_at, payload, exchange, routing_key,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# Record a key unless it is recorded and not expired: returns a row only when it recorded.
RECORD_DEDUP = (
    "INSERT INTO dedup (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE"
    " SET expires_at = excluded.expires_at WHERE dedup.expires_at <= ?3 RETURNING 1"
)
# Expired keys go a bounded number at a time (an index range), so no publish pays for a backlog.
PURGE_DEDUP = (
    "DELETE FROM dedup WHERE key IN"
    " (SELECT key FROM dedup WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)"
)
# "priority IN (...)" turns one range scan into ten index seeks bounded by due_at, and keeps
# the index's order, so no sort: checked with EXPLAIN QUERY PLAN in the contract tests.
# ``lost`` as it is once this claim counts a lease that ran out (a row still naming a token).
CLAIM_SELECT = (
    "SELECT id, payload, delivery_count, priority, exchange, routing_key,"
    " lost + (lease_token IS NOT NULL) FROM messages"
    " WHERE queue = ? AND priority IN (9, 8, 7, 6, 5, 4, 3, 2, 1, 0) AND due_at <= ?"
    " ORDER BY priority DESC, due_at, id LIMIT ?"
)
# The earliest visibility time of a queue: one min() per priority, each a single index seek
# (a plain min() over the queue would walk every index entry of the queue).
_EARLIEST_AT = (
    "coalesce((SELECT min(due_at) FROM messages WHERE queue = ?1 AND priority = {}), 1e308)"
)
EARLIEST = "SELECT min(" + ", ".join(_EARLIEST_AT.format(p) for p in range(10)) + ")"
LEASE = (
    "UPDATE messages SET lease_token = ?, lease_until = ?, due_at = ?,"
    " delivery_count = delivery_count + 1, lost = lost + (lease_token IS NOT NULL)"
    " WHERE id IN ({ids})"
)
DEAD_LETTER_BY_ID = (
    "INSERT INTO dead_letters (queue, payload, reason, delivery_count, failed_at, message_id)"
    " SELECT queue, payload, ?2, delivery_count, ?3, id FROM messages WHERE id = ?1"
)
DELETE_BY_ID = "DELETE FROM messages WHERE id IN ({ids})"
# Settling statements act only on rows still leased under the delivery's token.
ACK = "DELETE FROM messages WHERE lease_token = ? AND id IN ({ids}) RETURNING id"
REQUEUE = (
    "UPDATE messages SET lease_token = NULL, lease_until = NULL, due_at = ?"
    " WHERE lease_token = ? AND id IN ({ids}) RETURNING id"
)
EXTEND = (
    "UPDATE messages SET lease_until = ?, due_at = ?"
    " WHERE lease_token = ? AND id IN ({ids}) RETURNING id"
)
REJECT = (
    "DELETE FROM messages WHERE lease_token = ? AND id IN ({ids})"
    " RETURNING id, queue, payload, delivery_count"
)
INSERT_DEAD_LETTER = (
    "INSERT INTO dead_letters (queue, payload, reason, delivery_count, failed_at, message_id)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# Waiting = not leased, or leased with an expired lease (those are deliverable again).
SIZE = "SELECT count(*) FROM messages WHERE queue = ? AND (lease_until IS NULL OR lease_until <= ?)"
PURGE = "DELETE FROM messages WHERE queue = ? AND (lease_until IS NULL OR lease_until <= ?)"
SELECT_DEAD_LETTERS = (
    "SELECT queue, payload, reason, delivery_count, failed_at, id FROM dead_letters"
    " WHERE queue = ? ORDER BY id DESC LIMIT ?"
)
DELETE_DEAD_LETTERS = "DELETE FROM dead_letters WHERE queue = ? AND id IN ({ids})"


def in_ids(statement: str, count: int) -> str:
    """The statement with its ``{ids}`` replaced by ``count`` placeholders."""
    return statement.replace("{ids}", ", ".join("?" * count))


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    """Slices of ``ids`` small enough for one statement's parameters."""
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


class Database:
    """One database file: a connection per thread, write transactions, errors as TransportError.

    sqlite3 connections must not be shared between threads, so each thread that touches the
    database (the transport's SQL thread, every producer thread of ``publish_sync``) gets its
    own, opened on first use; connections of threads that ended are closed when the next one
    opens, so a server that starts a thread per request does not leak them.
    """

    def __init__(self, path: Path, busy_timeout: int, synchronous: str) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._generation = 0  # bumped by close(): thread-local connections of older ones are dead
        self._schema_ready = False

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the schema ensured) on first use."""
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "conn", None)
        if held is not None and held[0] == self._generation:
            return held[1]
        with self.errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout / 1000,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,  # only so that close() may close it from elsewhere
            )
            mode = enable_wal(conn, self.busy_timeout / 1000)
            if mode != "wal":
                logger.warning("SQLite broker %s runs in %s mode, not WAL", self.path, mode)
            conn.execute(f"PRAGMA busy_timeout={self.busy_timeout}")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            if not self._schema_ready:
                self._ensure_schema(conn)
        with self._lock:
            for thread, old in [c for c in self._conns if not c[0].is_alive()]:
                old.close()
                self._conns.remove((thread, old))
            self._conns.append((threading.current_thread(), conn))
        self._local.conn = (self._generation, conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        with self.transaction(conn):
            for statement in SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(bindings)")}
            if "arguments" not in columns:
                for statement in ADD_BINDING_ARGUMENTS:
                    conn.execute(statement)
            if "lost" not in {row[1] for row in conn.execute("PRAGMA table_info(messages)")}:
                conn.execute(ADD_LOST)
            conn.execute(INIT_META, ("schema_version", SCHEMA_VERSION))
            conn.execute(INIT_META, ("topology_version", 0))
            version = conn.execute(GET_META, ("schema_version",)).fetchone()[0]
        if version > SCHEMA_VERSION:
            raise TransportError(
                f"{self.path} has schema version {version}, newer than this celeriac "
                f"understands ({SCHEMA_VERSION}): upgrade celeriac"
            )
        self._schema_ready = True

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn sqlite3's errors into TransportError naming the database."""
        try:
            yield
        except sqlite3.Error as exc:
            raise TransportError(f"SQLite broker {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction: takes the write lock up front (waiting ``busy_timeout``)."""
        with self.errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction on this thread's connection."""
        return self.transaction(self.conn())

    def data_version(self) -> int | None:
        """``PRAGMA data_version`` on this thread's probe connection: it changes whenever any
        *other* connection commits. The probe never waits for a lock (``None`` when busy), so
        an event loop may call it directly: a poll costs microseconds, not a thread hop."""
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "probe", None)
        try:
            if held is None or held[0] != self._generation:
                probe = sqlite3.connect(
                    self.path, timeout=0, isolation_level=None, check_same_thread=False
                )
                with self._lock:
                    self._conns.append((threading.current_thread(), probe))
                held = self._local.probe = (self._generation, probe)
            return int(held[1].execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def read(self, query: str, *args: object) -> list[Any]:
        """All rows of one read, outside any transaction (WAL readers never wait for writers)."""
        with self.errors():
            return self.conn().execute(query, args).fetchall()

    def close(self) -> None:
        """Close every connection; threads that use the database later open new ones."""
        with self._lock:
            conns, self._conns = self._conns, []
            self._generation += 1
        for _, conn in conns:
            conn.close()
