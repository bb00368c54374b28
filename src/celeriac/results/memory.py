"""An in-process result backend: for tests, eager mode and single-process apps.

Every instance created with the same URL in one process shares one store, so that an app's
producer side and its in-process worker (``memory://`` broker + ``memory://`` backend) see each
other's results without being handed the same object. The store lives in a module-level
dictionary keyed by the URL (with Celery's ``cache+`` prefix removed, so ``cache+memory://`` and
``memory://`` are one store); :func:`reset_memory_backends` empties it between tests. Nothing
survives the process, and nothing is shared with other processes: use SQLite or Redis for that.

Waiting is push, not poll: a writer notifies a :class:`threading.Condition`, so ``wait_for``
returns as soon as a ready record is stored, however short the poll interval would have been.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from celeriac.results.base import Backend, ResultMeta

logger = logging.getLogger(__name__)

__all__ = ["MemoryBackend", "reset_memory_backends"]


@dataclass(slots=True)
class _Store:
    """One URL's records and counters. Every field is guarded by ``cond``'s lock."""

    records: dict[str, tuple[bytes, float | None]] = field(default_factory=dict)
    counters: dict[str, tuple[int, float | None]] = field(default_factory=dict)
    #: Bumped on every write, so a waiter can tell "something changed" without decoding under
    #: the lock (decoding a large result must not stall every other writer).
    generation: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _store_key(url: str) -> str:
    return url[len("cache+") :] if url.lower().startswith("cache+") else url


def _store_for(url: str) -> _Store:
    key = _store_key(url)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _Store()
        return store


def reset_memory_backends() -> None:
    """Forget every in-memory store in this process (for test isolation).

    The stores are emptied as well as dropped, so an instance created before the reset no
    longer sees old results either; it does not, however, share with instances created after
    the reset (they get a fresh store), so create backends anew after calling this.
    """
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        with store.cond:
            store.records.clear()
            store.counters.clear()
            store.generation += 1
            store.cond.notify_all()


def _live(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at > now


class MemoryBackend(Backend):
    """Results in a dictionary shared by every instance with the same URL in this process.

    Thread-safe. Expired records read as absent and are removed by :meth:`cleanup` (nothing
    removes them in the background: a long-lived process that stores many results with
    ``result_expires`` set should call ``cleanup`` now and then).
    """

    schemes: ClassVar[tuple[str, ...]] = ("memory", "cache+memory")

    def __init__(self, url: str = "memory://", **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._store = _store_for(url)

    # -- storage ----------------------------------------------------------------------------
    def _write(self, task_id: str, data: bytes, expires_at: float | None) -> None:
        store = self._store
        with store.cond:
            store.records[task_id] = (data, expires_at)
            store.generation += 1
            store.cond.notify_all()

    def _read_locked(self, task_id: str) -> bytes | None:
        record = self._store.records.get(task_id)
        if record is None:
            return None
        data, expires_at = record
        if not _live(expires_at, time.time()):
            return None
        return data

    def _read(self, task_id: str) -> bytes | None:
        with self._store.cond:
            return self._read_locked(task_id)

    def _delete(self, task_id: str) -> None:
        with self._store.cond:
            self._store.records.pop(task_id, None)

    def join_chord(
        self, group_id: str, member_id: str, *, index: int | None = None
    ) -> tuple[bool, int]:
        """Both counters move under the store's (re-entrant) lock: one atomic step."""
        with self._store.cond:
            return super().join_chord(group_id, member_id)

    def _incr(self, key: str, amount: int, expires_at: float | None) -> int:
        store = self._store
        with store.cond:
            current = store.counters.get(key)
            value = amount
            if current is not None and _live(current[1], time.time()):
                value += current[0]
            # Each increment renews the expiry, as Redis' INCRBY + EXPIRE does for chords.
            store.counters[key] = (value, expires_at)
            return value

    def cleanup(self) -> int:
        """Drop expired records and counters; returns how many were dropped."""
        store = self._store
        now = time.time()
        with store.cond:
            dead = [k for k, (_, exp) in store.records.items() if not _live(exp, now)]
            for key in dead:
                del store.records[key]
            dead_counters = [k for k, (_, exp) in store.counters.items() if not _live(exp, now)]
            for key in dead_counters:
                del store.counters[key]
        removed = len(dead) + len(dead_counters)
        if removed:
            logger.debug("memory backend: removed %d expired entries", removed)
        return removed

    # -- waiting ----------------------------------------------------------------------------
    def _wait(self, task_id: str, timeout: float | None) -> bytes | None:
        """Sleep on the store's condition until a ready record for ``task_id`` is written.

        The record is decoded outside the lock; the generation counter tells whether anything
        was written meanwhile, so no notification is lost between the check and the sleep.
        """
        store = self._store
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with store.cond:
                data = self._read_locked(task_id)
                seen = store.generation
            if data is not None and self._decode(data).ready:
                return data
            with store.cond:
                while store.generation == seen:
                    if deadline is None:
                        store.cond.wait()
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return self._read_locked(task_id)
                    store.cond.wait(remaining)

    # -- async twins: nothing here blocks beyond a short lock, so skip the thread hop ---------
    async def astore(self, meta: ResultMeta) -> None:
        self.store(meta)

    async def aget_meta(self, task_id: str) -> ResultMeta:
        return self.get_meta(task_id)
