"""Revokes in the SQLite broker's own file: the table ``revokes`` (key, expires_at).

``key`` is ``id:<task id>``, ``root_id:<id>`` or ``parent_id:<id>`` (:attr:`Revoke.key`); a
revoke made again keeps the later expiry. Reading purges what expired first, in the same write
transaction, so the table holds live revokes plus at most those expired since the last read.
The connection set-up is the broker's (:func:`~celeriac.transports.sqlite.open_database`); the
SQL runs on one thread per store, so the event loop never waits for the file's lock.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from celeriac.control.revokes import Revoke, RevokeStore
from celeriac.transports.sqlite import open_database

T = TypeVar("T")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS revokes (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS revokes_by_expiry ON revokes (expires_at)",
)
ADD = (
    "INSERT INTO revokes (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE"
    " SET expires_at = excluded.expires_at WHERE excluded.expires_at > revokes.expires_at"
)
PURGE = "DELETE FROM revokes WHERE expires_at <= ?"
LIVE = "SELECT key, expires_at FROM revokes WHERE expires_at > ? ORDER BY expires_at DESC LIMIT ?"


class SQLiteRevokeStore(RevokeStore):
    def __init__(self, url: str, options: dict[str, Any], expires: float = 0.0) -> None:
        self._db = open_database(url, options)  # a bad option fails here, named
        self._executor: ThreadPoolExecutor | None = None
        self._ready = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="celeriac-revokes-sqlite")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def open(self) -> None:
        await self._run(self._create)

    def _create(self) -> None:
        if self._ready:
            return
        with self._db.write() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        self._ready = True

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
        self._db.close()

    async def add(self, revokes: Sequence[Revoke]) -> None:
        if revokes:
            await self._run(self._add, [(r.key, r.expires_at) for r in revokes])

    def _add(self, rows: list[tuple[str, float]]) -> None:
        self._create()
        with self._db.write() as conn:
            conn.executemany(ADD, rows)

    async def live(self, limit: int) -> list[Revoke]:
        rows = await self._run(self._live, limit)
        return [Revoke.from_key(str(key), float(at)) for key, at in rows]

    def _live(self, limit: int) -> list[tuple[str, float]]:
        self._create()
        now = time.time()
        with self._db.write() as conn:
            conn.execute(PURGE, (now,))
            return list(conn.execute(LIVE, (now, limit)).fetchall())
