"""The revokes a worker starts with: those kept on the broker, and its ``--statedb`` file.

The broker keeps every revoke made with ``app.control.revoke`` until it expires
(:mod:`celeriac.control.revokes`); the worker reads the live ones here, before it consumes its
first message, and hears later ones on the control exchange (:mod:`celeriac.worker.control`,
which reads the store once more when it listens, for the revokes made in between).

Revokes of a whole workflow (``by="root_id"``/``"parent_id"``) are kept beside those by id;
the consumer asks :meth:`~celeriac.worker.state.Revoked.is_revoked` with a message's id, root
and parent when it receives it and again before it gives it a slot.

``--statedb``: Celery's ``worker_state_db`` keeps revoked ids in a ``shelve``; celeriac writes
a small JSON document instead (readable, portable, no pickle to load at start-up)::

    {"format": "celeriac-statedb", "version": 1, "saved_at": 1718000000.0,
     "revoked": [["<task id>", <seconds since it was revoked>], ...,
                 ["<root id>", <seconds>, "root_id"], ...]}

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

from celeriac.control.revokes import open_revoke_store, revoke_expires
from celeriac.errors import CeleriacError, ImproperlyConfigured
from celeriac.worker.components import Component
from celeriac.worker.state import REVOKES_MAX, WORKFLOW_KEYS, RevokedSet
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
        entries = [_entry(item, elapsed) for item in document["revoked"]]
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise StateDBError(f"--statedb {path}: {exc}; move it away to start afresh") from None
    before = len(revoked)
    revoked.restore(entries)
    return len(revoked) - before


def _entry(item: Any, elapsed: float) -> tuple[str, float, str]:
    """One saved revoke: ``[id, age]`` or ``[id, age, by]``."""
    by = str(item[2]) if len(item) > 2 else "id"
    if by != "id" and by not in WORKFLOW_KEYS:
        raise ValueError(f"a revoke by {by!r}")
    return (str(item[0]), float(item[1]) + elapsed, by)


def snapshot(revoked: RevokedSet) -> list[Any]:
    """What a state file keeps of ``revoked``: ``[id, age]`` and ``[id, age, by]`` items."""
    return [list(item) for item in revoked.ages()] + [
        list(item) for item in revoked.workflow_ages()
    ]


def save(path: str, revoked: RevokedSet | list[Any]) -> None:
    """Write ``revoked`` (the set, or its :func:`snapshot`) to ``path`` atomically (see the
    module docstring)."""
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "saved_at": time.time(),
        "revoked": snapshot(revoked) if isinstance(revoked, RevokedSet) else revoked,
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
    """Loads the revokes the worker starts with (the broker's, the state file's) before it
    consumes; with ``--statedb``, saves the file while it runs and at stop."""

    name = "revokes"
    requires = ("timer", "connection")

    def __init__(self) -> None:
        self.path: str | None = None
        self._saved = -1

    async def start(self, worker: Worker) -> None:
        revoked = worker.state.revoked
        try:
            revoked.expires = revoke_expires(worker.app)
        except ImproperlyConfigured as exc:
            raise StartupError(str(exc)) from None
        if worker.statedb is not None:
            self.path = worker.statedb
            try:
                loaded = load(self.path, revoked)
                save(self.path, revoked)  # fails now, not at the first revoke, if it cannot write
            except StateDBError as exc:
                raise StartupError(str(exc)) from None
            self._saved = revoked.changes
            logger.info("state file %s: %d revoked ids loaded", self.path, loaded)
            worker.timer.every(SAVE_INTERVAL, lambda: self.flush(worker), "statedb")
        store = open_revoke_store(worker.app)
        if store is None:
            logger.info("this broker keeps no revokes: only those heard from now on are honoured")
            return
        worker.state.revoke_store = store
        await load_revokes(worker, "at start")

    async def flush(self, worker: Worker) -> None:
        """Save if anything changed since the last save; the snapshot is taken on the event
        loop (which alone changes the set), the writing and syncing happen in a thread."""
        revoked = worker.state.revoked
        if self.path is None or revoked.changes == self._saved:
            return
        changes, entries = revoked.changes, snapshot(revoked)
        await asyncio.to_thread(save, self.path, entries)
        self._saved = changes

    async def stop(self, worker: Worker) -> None:
        try:
            await self.flush(worker)
        except StateDBError as exc:
            logger.error("%s", exc)
        store, worker.state.revoke_store = worker.state.revoke_store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()


async def load_revokes(worker: Worker, when: str) -> int:
    """Add the live revokes kept on the broker to the worker's set; how many were new. A broker
    that cannot be read is logged, not fatal: the revokes heard from now on still hold."""
    store = worker.state.revoke_store
    if store is None:
        return 0
    try:
        # bounded: a link that went half-open would otherwise hold the worker's start for ever
        async with asyncio.timeout(worker.app.conf.broker_connection_timeout * 2):
            await store.open()
            live = await store.live(REVOKES_MAX)
    except Exception as exc:
        logger.warning("the revokes kept on the broker could not be read %s: %s", when, exc)
        return 0
    now = time.time()
    new = worker.state.revoked.load((r.value, r.by, r.expires_at - now) for r in live)
    if new:
        logger.info("%d revokes kept on the broker loaded %s", new, when)
    return new
