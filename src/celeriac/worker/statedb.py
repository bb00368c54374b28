"""``--statedb``: the worker's revoked task ids kept in a file, so a revoke survives a restart.

Celery's ``worker_state_db`` keeps them in a ``shelve``; celeriac writes a small JSON document
instead (readable, portable, no pickle to load at start-up)::

    {"format": "celeriac-statedb", "version": 1, "saved_at": 1718000000.0,
     "revoked": [["<task id>", <seconds since it was revoked>], ...]}

The file is loaded before the worker consumes its first message, saved at most once a second
while revokes arrive and once more at shutdown. Every save is atomic: the document goes to a
temporary file in the same directory, is flushed to disk, then renamed over the old one, so a
crash or a power cut leaves the previous state or the new one, never half of one. A file that
is not a state file stops the worker at start-up naming it, rather than silently forgetting
revokes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import orjson

from celeriac.errors import CeleriacError
from celeriac.worker.components import Component
from celeriac.worker.state import RevokedSet
from celeriac.worker.steps import StartupError

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

logger = logging.getLogger("celeriac.worker")

FORMAT = "celeriac-statedb"
VERSION = 1
#: Seconds between two saves while revokes keep arriving.
SAVE_INTERVAL = 1.0


class StateDBError(CeleriacError):
    """The state file cannot be read or written."""


def load(path: str, revoked: RevokedSet) -> int:
    """Add the ids saved in ``path`` to ``revoked`` (none if there is no file yet); returns how
    many were still recent enough to keep."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise StateDBError(f"--statedb {path}: cannot read it: {exc}") from None
    try:
        document = orjson.loads(raw)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a celeriac state file")
        if document.get("version") != VERSION:
            raise ValueError(f"version {document.get('version')!r}, expected {VERSION}")
        elapsed = max(0.0, time.time() - float(document["saved_at"]))
        entries = [(str(task_id), float(age) + elapsed) for task_id, age in document["revoked"]]
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise StateDBError(f"--statedb {path}: {exc}; move it away to start afresh") from None
    before = len(revoked)
    revoked.restore(entries)
    return len(revoked) - before


def save(path: str, revoked: RevokedSet | list[tuple[str, float]]) -> None:
    """Write ``revoked`` (the set, or its :meth:`~RevokedSet.ages`) to ``path`` atomically (see
    the module docstring)."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": time.time(),
        "revoked": revoked.ages() if isinstance(revoked, RevokedSet) else revoked,
    }
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, orjson.dumps(document))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        with contextlib.suppress(OSError):  # make the rename itself durable, where possible
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise StateDBError(f"--statedb {path}: cannot write it: {exc}") from None


class StateDBStep(Component):
    """Loads the state file before the worker consumes, saves it while it runs and at stop."""

    name = "statedb"
    requires = ("timer",)

    def __init__(self) -> None:
        self.path: str | None = None
        self._saved = -1

    def enabled(self, worker: Worker) -> bool:
        return worker.statedb is not None

    async def start(self, worker: Worker) -> None:
        assert worker.statedb is not None
        self.path = worker.statedb
        revoked = worker.state.revoked
        try:
            loaded = load(self.path, revoked)
            save(self.path, revoked)  # fails now, not at the first revoke, if it cannot write
        except StateDBError as exc:
            raise StartupError(str(exc)) from None
        self._saved = revoked.changes
        logger.info("state file %s: %d revoked ids loaded", self.path, loaded)
        worker.timer.every(SAVE_INTERVAL, lambda: self.flush(worker), "statedb")

    async def flush(self, worker: Worker) -> None:
        """Save if anything changed since the last save; the snapshot is taken on the event
        loop (which alone changes the set), the writing and syncing happen in a thread."""
        revoked = worker.state.revoked
        if self.path is None or revoked.changes == self._saved:
            return
        changes, snapshot = revoked.changes, revoked.ages()
        await asyncio.to_thread(save, self.path, snapshot)
        self._saved = changes

    async def stop(self, worker: Worker) -> None:
        try:
            await self.flush(worker)
        except StateDBError as exc:
            logger.error("%s", exc)
