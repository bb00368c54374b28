"""Beat's state on the in-process broker (``memory://``), for tests and single-process use.

Every store made for one memory broker URL in this process shares one state, as the memory
transports of that URL share one broker (it is kept with that broker, so
:func:`~celeriac.transports.memory.reset_memory_brokers` forgets it too). Each method is one
critical section under that state's lock, so beats in several threads (each with its own loop)
contend as beats in several processes do on the other brokers.

Time is this process's monotonic clock: nothing outside the process shares the state, so no
other clock needs to agree, and a wall-clock step cannot end or stretch a lease.

Entries are kept as JSON, as the other stores keep them, so an entry that would not survive
SQLite or Redis fails here too, and a caller that mutates what it read changes nothing stored.

Build one with ``MemoryBeatStore(url, options)`` or :func:`open_store` from an app; then
``await store.open()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from celeriac.beat.store import BeatStore
from celeriac.transports.memory import shared_state

if TYPE_CHECKING:
    from celeriac.app.base import Celeriac


@dataclass
class _State:
    """The beat state of one memory broker."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    leader: str | None = None
    lease_until: float = 0.0
    version: int = 0
    entries: dict[str, bytes] = field(default_factory=dict)
    runs: dict[str, float] = field(default_factory=dict)


class MemoryBeatStore(BeatStore):
    """:class:`~celeriac.beat.store.BeatStore` on the memory broker of ``url`` (no options)."""

    def __init__(self, url: str = "memory://", options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self._state = shared_state(url, "beat", _State)

    async def lead(self, node: str, ttl: float) -> bool:
        state = self._state
        now = time.monotonic()
        with state.lock:
            if state.leader == node or state.leader is None or state.lease_until <= now:
                state.leader, state.lease_until = node, now + ttl
                return True
            return False

    async def resign(self, node: str) -> None:
        with self._state.lock:
            if self._state.leader == node:
                self._state.leader, self._state.lease_until = None, 0.0

    async def version(self) -> int:
        with self._state.lock:
            return self._state.version

    async def entries(self) -> dict[str, dict[str, Any]]:
        with self._state.lock:
            stored = dict(self._state.entries)
        return {name: orjson.loads(blob) for name, blob in stored.items()}

    async def put_entries(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if not entries:
            return
        encoded = {str(name): orjson.dumps(dict(entry)) for name, entry in entries.items()}
        with self._state.lock:
            self._state.entries.update(encoded)
            self._state.version += 1

    async def delete_entries(self, names: Iterable[str]) -> None:
        gone = list(names)
        if not gone:
            return
        with self._state.lock:
            for name in gone:
                self._state.entries.pop(name, None)
                self._state.runs.pop(name, None)
            self._state.version += 1

    async def runs(self) -> dict[str, float]:
        with self._state.lock:
            return dict(self._state.runs)

    async def record_runs(self, runs: Mapping[str, float]) -> None:
        """Record each entry's last slot; a record never moves back (a paused old leader that
        records an earlier slot late cannot make the next leader fire a slot again)."""
        with self._state.lock:
            stored = self._state.runs
            for name, at in runs.items():
                if float(at) > stored.get(name, float("-inf")):
                    stored[name] = float(at)


def open_store(app: Celeriac) -> MemoryBeatStore:
    """The store of ``app``'s memory broker (not yet opened: ``await store.open()``)."""
    return MemoryBeatStore(app.broker_url, app.conf.broker_transport_options)


__all__ = ["MemoryBeatStore", "open_store"]
