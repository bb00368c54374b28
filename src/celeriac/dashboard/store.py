"""The dashboard's history: tasks, their event timelines, per-minute series and the audit log,
in an embedded SQLite file, so that a restarted dashboard still shows yesterday's failures.

Flower keeps its history in memory (lost on restart, flower#476) and grows until the OOM killer
comes (flower#770). Here memory holds only what :mod:`.ingest` has not flushed yet (half a
second of events); the file holds the rest and is bounded twice: by age (``max_age`` seconds) and
by count (``max_tasks`` rows, the least recently updated go first), pruned every minute.

Writes come in batches (:class:`Batch`, one transaction each): a task touched by three events in
one batch is one upsert, not three; its columns merge with what the file knew (a field an event
did not carry keeps its stored value), so a dashboard restarted between a task's ``received`` and
``succeeded`` still has its name and arguments. Reads (:mod:`.queries`) go through one
connection per thread; the file is in WAL mode, so readers never wait for the writer.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celeriac.utils.sqlite_wal import enable_wal

#: The longest text kept of a task's arguments, result or exception (a repr can be huge).
MAX_TEXT = 4096
#: The longest traceback kept.
MAX_TRACEBACK = 16384
#: Seconds between two prunes.
PRUNE_EVERY = 60.0
#: Hidden dead letters remembered at most (the oldest go first).
MAX_HANDLED = 100_000
#: Audit rows kept at most (the oldest go first).
MAX_AUDIT = 100_000

#: The task columns, in table order (``id`` first). ``first_seen`` is written once.
TASK_COLUMNS = (
    "id", "name", "state", "worker", "args", "kwargs", "result", "exception", "traceback",
    "root_id", "parent_id", "queue", "retries", "eta", "expires", "sent", "received", "started",
    "succeeded", "failed", "retried", "revoked", "rejected", "runtime", "updated", "first_seen",
)  # fmt: skip
#: Series counters per minute and task name.
SERIES_COUNTS = (
    "received", "started", "succeeded", "failed", "retried", "revoked", "rejected",
)  # fmt: skip

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, name TEXT, state TEXT, worker TEXT, args TEXT, kwargs TEXT,
    result TEXT, exception TEXT, traceback TEXT, root_id TEXT, parent_id TEXT, queue TEXT,
    retries INTEGER, eta TEXT, expires TEXT, sent REAL, received REAL, started REAL,
    succeeded REAL, failed REAL, retried REAL, revoked REAL, rejected REAL, runtime REAL,
    updated REAL NOT NULL, first_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_updated ON tasks (updated);
CREATE INDEX IF NOT EXISTS tasks_name ON tasks (name, updated);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, updated);
CREATE INDEX IF NOT EXISTS tasks_worker ON tasks (worker, updated);
CREATE INDEX IF NOT EXISTS tasks_root ON tasks (root_id);
CREATE TABLE IF NOT EXISTS task_events (
    task_id TEXT NOT NULL, type TEXT NOT NULL, timestamp REAL NOT NULL, hostname TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS task_events_task ON task_events (task_id, timestamp);
CREATE INDEX IF NOT EXISTS task_events_time ON task_events (timestamp);
CREATE TABLE IF NOT EXISTS series (
    minute INTEGER NOT NULL, name TEXT NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in SERIES_COUNTS)},
    runtime_sum REAL NOT NULL DEFAULT 0, runtime_n INTEGER NOT NULL DEFAULT 0,
    runtime_max REAL NOT NULL DEFAULT 0,
    wait_sum REAL NOT NULL DEFAULT 0, wait_n INTEGER NOT NULL DEFAULT 0,
    wait_max REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
    role TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters_handled (
    fingerprint TEXT PRIMARY KEY, queue TEXT NOT NULL, action TEXT NOT NULL, at REAL NOT NULL,
    detail TEXT NOT NULL
) WITHOUT ROWID;
"""

_MERGED = ", ".join(
    f"{c} = COALESCE(excluded.{c}, tasks.{c})"
    for c in TASK_COLUMNS
    if c not in ("id", "first_seen", "state", "updated")
)
UPSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) VALUES ({', '.join('?' * len(TASK_COLUMNS))})"  # noqa: S608 - constant column names; values are bound
    f" ON CONFLICT (id) DO UPDATE SET {_MERGED}, state = excluded.state,"
    " updated = MAX(excluded.updated, tasks.updated)"
)
INSERT_EVENT = (
    "INSERT INTO task_events (task_id, type, timestamp, hostname, detail) VALUES (?, ?, ?, ?, ?)"
)
_SERIES_VALUES = (*SERIES_COUNTS, "runtime_sum", "runtime_n", "wait_sum", "wait_n")
UPSERT_SERIES = (
    f"INSERT INTO series (minute, name, {', '.join(_SERIES_VALUES)}, runtime_max, wait_max)"  # noqa: S608 - constant column names; values are bound
    f" VALUES ({', '.join('?' * (len(_SERIES_VALUES) + 4))}) ON CONFLICT (minute, name) DO UPDATE"
    f" SET {', '.join(f'{c} = {c} + excluded.{c}' for c in _SERIES_VALUES)},"
    " runtime_max = MAX(runtime_max, excluded.runtime_max),"
    " wait_max = MAX(wait_max, excluded.wait_max)"
)


def clip(value: Any, limit: int = MAX_TEXT) -> str | None:
    """``value`` as text of at most ``limit`` characters (None stays None)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


@dataclass
class SeriesPoint:
    """One minute of one task name: counts per event, runtime and wait sums."""

    counts: dict[str, int] = field(default_factory=dict)
    runtime_sum: float = 0.0
    runtime_n: int = 0
    runtime_max: float = 0.0
    wait_sum: float = 0.0
    wait_n: int = 0
    wait_max: float = 0.0

    def row(self, minute: int, name: str) -> tuple[Any, ...]:
        return (
            minute,
            name,
            *(self.counts.get(c, 0) for c in SERIES_COUNTS),
            self.runtime_sum,
            self.runtime_n,
            self.wait_sum,
            self.wait_n,
            self.runtime_max,
            self.wait_max,
        )


@dataclass
class Batch:
    """What one flush writes: task rows (merged per id), event rows, series increments."""

    tasks: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    series: dict[tuple[int, str], SeriesPoint] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tasks or self.events or self.series)

    def point(self, at: float, name: str) -> SeriesPoint:
        key = (int(at // 60), name)
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = SeriesPoint()
        return found


class HistoryStore:
    """The SQLite file at ``path`` (created with its tables on :meth:`open`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_age: float = 7 * 86400.0,
        max_tasks: int = 100_000,
        max_events: int | None = None,
        prune_every: float = PRUNE_EVERY,
    ) -> None:
        self.path = str(path)
        self.max_age = max_age
        self.max_tasks = max_tasks
        #: Timeline rows kept at most (ten per task by default).
        self.max_events = max_events if max_events is not None else max_tasks * 10
        self.prune_every = prune_every
        self._local = threading.local()
        self._next_prune = 0.0
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- connections ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 10000")
            enable_wal(conn, 10.0)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read, as :class:`sqlite3.Row` (by name and by index)."""
        conn = self._connect()
        cursor = conn.execute(sql, params)
        cursor.row_factory = sqlite3.Row
        return list(cursor.fetchall())

    def open(self) -> HistoryStore:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
        return self

    def close(self) -> None:
        """Close every thread's connection (call once nothing uses the store any more)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with contextlib.suppress(sqlite3.ProgrammingError):  # another thread's
                conn.close()
        self._local = threading.local()

    # -- writing ----------------------------------------------------------------------------
    def write(self, batch: Batch, now: float | None = None) -> None:
        """Write one batch in one transaction; prune when a minute has passed since the last."""
        if batch:
            with self.transaction() as conn:
                if batch.tasks:
                    conn.executemany(UPSERT_TASK, batch.tasks.values())
                if batch.events:
                    conn.executemany(INSERT_EVENT, batch.events)
                if batch.series:
                    conn.executemany(
                        UPSERT_SERIES, (p.row(m, n) for (m, n), p in batch.series.items())
                    )
        at = time.time() if now is None else now
        if at >= self._next_prune:
            self._next_prune = at + self.prune_every
            self.prune(at)

    def prune(self, now: float | None = None) -> int:
        """Apply retention: drop tasks older than ``max_age`` and past ``max_tasks`` (the least
        recently updated), their timeline rows, series and audit rows and hidden dead letters
        past the age; returns
        how many tasks went."""
        at = time.time() if now is None else now
        cutoff = at - self.max_age
        with self.transaction() as conn:
            old = conn.execute("SELECT id FROM tasks WHERE updated < ?", (cutoff,)).fetchall()
            count = conn.execute("SELECT count(*) FROM tasks").fetchone()[0] - len(old)
            if count > self.max_tasks:
                old += conn.execute(
                    "SELECT id FROM tasks WHERE updated >= ? ORDER BY updated LIMIT ?",
                    (cutoff, count - self.max_tasks),
                ).fetchall()
            conn.executemany("DELETE FROM tasks WHERE id = ?", old)
            conn.executemany("DELETE FROM task_events WHERE task_id = ?", old)
            gone = len(old)
            conn.execute("DELETE FROM task_events WHERE timestamp < ?", (cutoff,))
            events = conn.execute("SELECT count(*) FROM task_events").fetchone()[0]
            if events > self.max_events:
                conn.execute(
                    "DELETE FROM task_events WHERE rowid IN"
                    " (SELECT rowid FROM task_events ORDER BY timestamp LIMIT ?)",
                    (events - self.max_events,),
                )
            conn.execute("DELETE FROM series WHERE minute < ?", (int(cutoff // 60),))
            conn.execute(
                "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?", (MAX_AUDIT,)
            )
            # hidden dead letters: past the age, or beyond the newest MAX_HANDLED (a letter
            # that old is past what the page reads of a queue, its newest SCAN_LIMIT)
            conn.execute("DELETE FROM dead_letters_handled WHERE at < ?", (cutoff,))
            conn.execute(
                "DELETE FROM dead_letters_handled WHERE fingerprint IN (SELECT fingerprint"
                " FROM dead_letters_handled ORDER BY at DESC LIMIT -1 OFFSET ?)",
                (MAX_HANDLED,),
            )
        return int(gone)

    # -- the audit log and the dead-letter ledger -------------------------------------------
    def audit(
        self, who: str, role: str, action: str, target: str, detail: str, outcome: str
    ) -> int:
        """Record one action taken from the dashboard: who, what, on what, and how it went;
        returns the row's id."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO audit (at, who, role, action, target, detail, outcome)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), who, role, action, clip(target, 1024), clip(detail), clip(outcome)),
            )
            return int(cursor.lastrowid or 0)

    def audit_entry(self, entry_id: int) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM audit WHERE id = ?", (entry_id,))
        return rows[0] if rows else None

    def audit_log(self, limit: int = 100, offset: int = 0) -> list[sqlite3.Row]:
        return self.query(
            "SELECT * FROM audit ORDER BY id DESC LIMIT ? OFFSET ?", (limit, max(offset, 0))
        )

    def mark_letters(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """Remember dead letters handled here: ``(fingerprint, queue, action, detail)``."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO dead_letters_handled"
                " (fingerprint, queue, action, at, detail) VALUES (?, ?, ?, ?, ?)",
                [(f, q, a, now, d) for f, q, a, d in rows],
            )

    def handled_letters(self, queue: str) -> set[str]:
        rows = self.query("SELECT fingerprint FROM dead_letters_handled WHERE queue = ?", (queue,))
        return {str(r[0]) for r in rows}
