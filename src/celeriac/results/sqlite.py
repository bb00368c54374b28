"""A result backend in one SQLite file: the embedded default, durable and shared by processes.

URLs: ``sqlite:///relative/path.db`` (relative to the working directory) or
``sqlite:////absolute/path.db``; Celery's ``db+sqlite://`` spelling is accepted too. The file may
be the one the SQLite broker uses: results live in their own tables (``celeriac_results`` and
``celeriac_counters``) and never touch the broker's.

Producers and workers call a backend from several threads at once, and a ``sqlite3`` connection
must not be shared between threads mid-statement, so each thread (and each forked process) opens
its own connection, lazily. Every connection runs in WAL mode (readers never block the writer),
with ``synchronous=NORMAL`` (durable across a process crash, which is the failure that matters
here; a power cut may lose the last few commits) and a ``busy_timeout`` (default 5000 ms) so that
two writers queue instead of failing with "database is locked". Every write is one autocommit
statement, so there is no transaction to upgrade and no lock held across Python code.

Waiting, the trade-off: SQLite cannot notify another process of a change, so ``wait_for`` polls,
starting at ``poll_min`` and backing off to ``poll_max`` (1 ms to 50 ms): a result written by
another process is seen up to ~50 ms late, for at most ~20 cheap indexed reads a second per
waiter. A result written by *this* process (an in-process worker, a threads pool) wakes the
waiter at once, through a condition shared by every instance on the same file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from celeriac.errors import BackendError, ImproperlyConfigured
from celeriac.results.base import Backend
from celeriac.utils.sqlite_wal import enable_wal
from celeriac.utils.urls import redact_url

logger = logging.getLogger(__name__)

__all__ = ["SQLiteBackend", "sqlite_path"]

DEFAULT_BUSY_TIMEOUT_MS = 5000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS celeriac_results (
        task_id TEXT PRIMARY KEY,
        data BLOB NOT NULL,
        expires_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS celeriac_results_expires ON celeriac_results (expires_at)",
    """CREATE TABLE IF NOT EXISTS celeriac_counters (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL,
        expires_at REAL
    )""",
)

_WRITE = """
INSERT INTO celeriac_results (task_id, data, expires_at) VALUES (?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at
"""

_READ = """
SELECT data FROM celeriac_results
WHERE task_id = ? AND (expires_at IS NULL OR expires_at > ?)
"""

# An expired counter counts as absent, so it restarts from ``amount`` rather than from its old
# value: the same semantics as a Redis key that has expired between two INCRBYs.
_INCR = """
INSERT INTO celeriac_counters (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    value = CASE
        WHEN celeriac_counters.expires_at IS NOT NULL AND celeriac_counters.expires_at <= ?
        THEN excluded.value
        ELSE celeriac_counters.value + excluded.value
    END,
    expires_at = excluded.expires_at
RETURNING value
"""

_CLEANUP = (
    "DELETE FROM celeriac_results WHERE expires_at IS NOT NULL AND expires_at <= ?",
    "DELETE FROM celeriac_counters WHERE expires_at IS NOT NULL AND expires_at <= ?",
)


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite://`` / ``db+sqlite://`` URL (query string excluded).

    Three slashes then a relative path, or four for an absolute one, as SQLAlchemy spells it.
    An in-memory database is refused: each thread would get its own empty database.
    """
    if url.lower().startswith("db+"):
        url = url[3:]
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ImproperlyConfigured(f"result_backend {redact_url(url)!r} is not a sqlite:// URL")
    path = rest.partition("?")[0]
    if not path.startswith("/") or path in ("/", "/:memory:"):
        raise ImproperlyConfigured(
            f"result_backend {redact_url(url)!r}: expected sqlite:///relative.db or "
            "sqlite:////absolute.db (use memory:// for an in-process backend)"
        )
    return path[1:]


class _Notifier:
    """Wakes in-process waiters when this process writes a result to one database file."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.generation = 0

    def notify(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()


_notifiers: dict[str, _Notifier] = {}
_notifiers_lock = threading.Lock()


def _notifier_for(path: str) -> _Notifier:
    key = os.path.realpath(path)
    with _notifiers_lock:
        notifier = _notifiers.get(key)
        if notifier is None:
            notifier = _notifiers[key] = _Notifier()
        return notifier


def _reset_notifiers_after_fork() -> None:
    # A lock held by another thread at fork time would stay held forever in the child.
    global _notifiers_lock
    _notifiers_lock = threading.Lock()
    _notifiers.clear()


os.register_at_fork(after_in_child=_reset_notifiers_after_fork)


class _Connection:
    """One thread's connection; closes it when the thread's local storage is dropped."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # already unusable; closing is best effort
            self.conn.close()

    def __del__(self) -> None:
        # A forked child must not close its parent's connection (SQLite's rule): abandon it.
        if self.pid == os.getpid():
            self.close()


class SQLiteBackend(Backend):
    """Results in a SQLite file, readable by every process on the machine.

    Options (keyword arguments, or the URL's query string): ``busy_timeout`` in milliseconds.
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite", "db+sqlite")

    def __init__(self, url: str, *, busy_timeout: int | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.path = sqlite_path(url)
        query = dict(parse_qsl(url.partition("?")[2]))
        unknown = set(query) - {"busy_timeout"}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ImproperlyConfigured(
                f"result_backend {redact_url(url)!r}: unknown option(s) {names}"
            )
        if busy_timeout is None:
            try:
                busy_timeout = int(query.get("busy_timeout", DEFAULT_BUSY_TIMEOUT_MS))
            except ValueError:
                raise ImproperlyConfigured(
                    f"result_backend {redact_url(url)!r}: busy_timeout must be milliseconds"
                ) from None
        if busy_timeout < 0:
            raise ImproperlyConfigured("result_backend busy_timeout must not be negative")
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._schema_ready = False
        self._notifier = _notifier_for(self.path)
        self._pid = os.getpid()

    # -- connections ------------------------------------------------------------------------
    def _check_fork(self) -> None:
        """In a forked child, drop everything inherited: connections, locks, the notifier.

        The parent's connections are abandoned, never used or closed (SQLite forbids carrying a
        connection across fork), and a lock another thread held at fork time would never be
        released here.
        """
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._local = threading.local()
            self._all = weakref.WeakSet()
            self._schema_ready = False
            self._notifier = _notifier_for(self.path)

    def _conn(self) -> sqlite3.Connection:
        self._check_fork()
        holder: _Connection | None = getattr(self._local, "holder", None)
        if holder is not None:
            return holder.conn
        holder = _Connection(self._connect())
        self._local.holder = holder
        with self._lock:
            self._all.add(holder)
        return holder.conn

    def _connect(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False only so that close() may close every thread's connection;
            # each connection is still used by the one thread that opened it.
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open result database {self.path!r}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout)}")
            enable_wal(conn, self.busy_timeout / 1000)
            conn.execute("PRAGMA synchronous = NORMAL")
            if not self._schema_ready:
                with self._lock:
                    if not self._schema_ready:
                        for statement in _SCHEMA:
                            conn.execute(statement)
                        self._schema_ready = True
        except sqlite3.Error as exc:
            conn.close()
            raise BackendError(f"cannot set up result database {self.path!r}: {exc}") from exc
        return conn

    def close(self) -> None:
        """Close every thread's connection; the backend reconnects if it is used again."""
        self._check_fork()
        with self._lock:
            holders = list(self._all)
            self._all = weakref.WeakSet()
            self._local = threading.local()
        for holder in holders:
            if holder.pid == os.getpid():
                holder.close()

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"result database {self.path!r}: {exc}") from exc

    # -- storage ----------------------------------------------------------------------------
    def _write(self, task_id: str, data: bytes, expires_at: float | None) -> None:
        with self._transaction() as conn:  # an upsert: see _incr for why not autocommit
            conn.execute(_WRITE, (task_id, data, expires_at))
        self._notifier.notify()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on this thread's connection (which otherwise autocommits)."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BackendError(f"result database {self.path!r}: {exc}") from exc

    def _write_many(self, items: list[tuple[str, bytes, float | None]]) -> None:
        """Every record in one transaction: one fsync-worthy commit instead of one per result."""
        with self._transaction() as conn:
            conn.executemany(_WRITE, items)
        self._notifier.notify()

    def _read(self, task_id: str) -> bytes | None:
        rows = self._execute(_READ, (task_id, time.time()))
        return bytes(rows[0][0]) if rows else None

    def _delete(self, task_id: str) -> None:
        self._execute("DELETE FROM celeriac_results WHERE task_id = ?", (task_id,))

    def join_chord(
        self, group_id: str, member_id: str, *, index: int | None = None
    ) -> tuple[bool, int]:
        """Mark the member and count it in one transaction: a process killed half-way leaves
        neither, so the member's redelivered message counts it."""
        expires_at, now = self._expires_at(), time.time()
        with self._transaction() as conn:
            member = f"chord-member:{group_id}:{member_id}"
            added = conn.execute(_INCR, (member, 1, expires_at, now)).fetchall()[0][0] == 1
            counter = (f"chord-count:{group_id}", int(added), expires_at, now)
            count = int(conn.execute(_INCR, counter).fetchall()[0][0])
        return added, count

    def _incr(self, key: str, amount: int, expires_at: float | None) -> int:
        # BEGIN IMMEDIATE takes the write lock first (waiting up to busy_timeout): an autocommit
        # upsert reads, then upgrades to write, and fails at once with "database is locked"
        # when another connection committed in between (WAL's busy snapshot)
        with self._transaction() as conn:
            rows = conn.execute(_INCR, (key, amount, expires_at, time.time())).fetchall()
        return int(rows[0][0])

    def cleanup(self) -> int:
        """Delete expired results and counters; returns how many rows were deleted."""
        now = time.time()
        removed = 0
        conn = self._conn()
        try:
            for statement in _CLEANUP:
                removed += max(conn.execute(statement, (now,)).rowcount, 0)
        except sqlite3.Error as exc:
            raise BackendError(f"result database {self.path!r}: {exc}") from exc
        if removed:
            logger.debug("sqlite backend %s: removed %d expired rows", self.path, removed)
        return removed

    # -- waiting ----------------------------------------------------------------------------
    def _wait(self, task_id: str, timeout: float | None) -> bytes | None:
        """Poll with back-off, but sleep on the in-process notifier between polls.

        A write from this process ends the sleep at once; a write from another process is
        seen at the next poll (see the module docstring for the trade-off).
        """
        self._check_fork()
        notifier = self._notifier
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll_min
        while True:
            seen = notifier.generation
            data = self._read(task_id)
            if data is not None and self._decode(data).ready:
                return data
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return data
                delay = min(delay, remaining)
            with notifier.cond:
                if notifier.generation == seen:
                    notifier.cond.wait(delay)
            delay = min(delay * 2, self.poll_max)
