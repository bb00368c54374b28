"""Switching a SQLite file to WAL when several connections open it at once.

``PRAGMA journal_mode = WAL`` needs the file to itself the first time (it rewrites the header),
and SQLite answers "database is locked" at once, without its busy handler, when another
connection (a thread of this process, or another worker) holds the file meanwhile: eight threads
opening a fresh results file made one of them fail. The switch is retried here, with short
pauses, until ``timeout``; once the file is in WAL mode the pragma no longer needs that lock.
"""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Put ``conn``'s file in WAL mode (retrying while it is locked); the mode it ends in."""
    deadline = time.monotonic() + max(timeout, 0.0)
    pause = 0.002
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)  # another connection is switching it: wait for it to finish
            pause = min(pause * 2, 0.05)
