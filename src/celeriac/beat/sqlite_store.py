"""Beat's state in the SQLite broker's own database file (``sqlite://``).

Four tables beside the broker's, created on first use: ``beat_leader`` (at most one row: the
node holding the lease and when it ends), ``beat_entries`` (name, the entry as JSON),
``beat_runs`` (name, the last slot fired, as a UNIX time) and ``beat_meta`` (the version). The
connection set-up is the broker's (:func:`~celeriac.transports.sqlite.open_database`: WAL, the
``busy_timeout`` and ``synchronous`` options, errors as TransportError naming the file).

Every method is one transaction; writes take the write lock up front (``BEGIN IMMEDIATE``), so
two beats in two processes serialize on the file's lock: :meth:`SQLiteBeatStore.lead` takes the
lease when it is free or expired and renews it when it is ours, in one upsert whose condition
SQLite evaluates under that lock, so two contenders can never both take it.

Time is the wall clock: the processes sharing the file share the host, hence the clock. The SQL
runs on one thread per store, so the event loop never waits for the file's lock.

Build one with ``SQLiteBeatStore(url, options)`` (``options``: the app's
``broker_transport_options``) or :func:`open_store` from an app; then ``await store.open()``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from celeriac.beat.store import BeatStore
from celeriac.transports.sqlite import open_database

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac

T = TypeVar("T")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS beat_leader (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " node TEXT NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS beat_entries (name TEXT PRIMARY KEY, entry TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS beat_runs (name TEXT PRIMARY KEY, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS beat_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO beat_meta (key, value) VALUES ('version', 0)",
)
# Take the lease if there is none, it expired, or it is ours: a row comes back only then.
LEAD = (
    "INSERT INTO beat_leader (id, node, expires_at) VALUES (1, ?1, ?2) ON CONFLICT (id) DO UPDATE"
    " SET node = excluded.node, expires_at = excluded.expires_at"
    " WHERE beat_leader.node = excluded.node OR beat_leader.expires_at <= ?3 RETURNING node"
)
RESIGN = "DELETE FROM beat_leader WHERE id = 1 AND node = ?"
VERSION = "SELECT value FROM beat_meta WHERE key = 'version'"
BUMP = "UPDATE beat_meta SET value = value + 1 WHERE key = 'version'"
ENTRIES = "SELECT name, entry FROM beat_entries"
PUT_ENTRY = "INSERT OR REPLACE INTO beat_entries (name, entry) VALUES (?, ?)"
DELETE_ENTRY = "DELETE FROM beat_entries WHERE name = ?"
DELETE_RUN = "DELETE FROM beat_runs WHERE name = ?"
RUNS = "SELECT name, at FROM beat_runs"
# A run record never moves back: see SQLiteBeatStore.record_runs.
RECORD_RUN = (
    "INSERT INTO beat_runs (name, at) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE"
    " SET at = excluded.at WHERE excluded.at > beat_runs.at"
)


class SQLiteBeatStore(BeatStore):
    """:class:`~celeriac.beat.store.BeatStore` in the broker's database file (see the module)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self._db = open_database(url, options or {})  # a bad option fails here, named
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on this store's SQL thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="celeriac-beat-sqlite")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def open(self) -> None:
        await self._run(self._create)

    def _create(self) -> None:
        with self._db.write() as conn:
            for statement in SCHEMA:
                conn.execute(statement)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._db.close()

    # -- the lease ----------------------------------------------------------------------------
    async def lead(self, node: str, ttl: float) -> bool:
        return await self._run(self._lead, node, ttl)

    def _lead(self, node: str, ttl: float) -> bool:
        with self._db.write() as conn:  # BEGIN IMMEDIATE: the condition is judged under the lock
            now = time.time()
            return conn.execute(LEAD, (node, now + ttl, now)).fetchone() is not None

    async def resign(self, node: str) -> None:
        await self._run(self._write, [(RESIGN, [(node,)])])

    # -- entries and runs ---------------------------------------------------------------------
    def _write(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Each statement with each of its argument tuples, all in one write transaction."""
        with self._db.write() as conn:
            for statement, rows in statements:
                conn.executemany(statement, rows)

    async def version(self) -> int:
        rows = await self._run(self._db.read, VERSION)
        return int(rows[0][0]) if rows else 0

    async def entries(self) -> dict[str, dict[str, Any]]:
        rows = await self._run(self._db.read, ENTRIES)
        return {str(name): orjson.loads(entry) for name, entry in rows}

    async def put_entries(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if not entries:
            return
        rows = [(str(name), orjson.dumps(dict(entry)).decode()) for name, entry in entries.items()]
        await self._run(self._write, [(PUT_ENTRY, rows), (BUMP, [()])])

    async def delete_entries(self, names: Iterable[str]) -> None:
        gone = [(str(name),) for name in names]
        if gone:
            await self._run(self._write, [(DELETE_ENTRY, gone), (DELETE_RUN, gone), (BUMP, [()])])

    async def runs(self) -> dict[str, float]:
        rows = await self._run(self._db.read, RUNS)
        return {str(name): float(at) for name, at in rows}

    async def record_runs(self, runs: Mapping[str, float]) -> None:
        """Record each entry's last slot; a record never moves back (a paused old leader that
        records an earlier slot late cannot make the next leader fire a slot again)."""
        if runs:
            rows = [(str(name), float(at)) for name, at in runs.items()]
            await self._run(self._write, [(RECORD_RUN, rows)])


def open_store(app: Celeriac) -> SQLiteBeatStore:
    """The store in ``app``'s SQLite broker file (not yet opened: ``await store.open()``)."""
    return SQLiteBeatStore(app.broker_url, app.conf.broker_transport_options)


__all__ = ["SQLiteBeatStore", "open_store"]
