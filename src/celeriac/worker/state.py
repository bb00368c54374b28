"""Worker-local state: which tasks run now, and which ids are revoked.

Revoked ids live in a bounded, expiring set (Celery's ``worker_revoked_max`` idea): a revoke for
a task that never arrives must not grow the worker's memory forever. With ``--statedb`` the set
is kept in a file (:mod:`celeriac.worker.statedb`), so a revoke survives a restart.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from celeriac.context import Request

REVOKES_MAX = 50_000
REVOKE_EXPIRES = 10_800.0


class RevokedSet:
    """A set of task ids that forgets the oldest past ``maxlen`` or ``expires`` seconds."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES) -> None:
        self._items: OrderedDict[str, float] = OrderedDict()
        self.maxlen = maxlen
        self.expires = expires
        #: Bumped by every change, so a saver knows whether there is anything new to write.
        self.changes = 0

    def add(self, task_id: str) -> None:
        self._items[task_id] = time.monotonic()
        self._items.move_to_end(task_id)
        self.changes += 1
        self._purge()

    def discard(self, task_id: str) -> None:
        if self._items.pop(task_id, None) is not None:
            self.changes += 1

    def ages(self) -> list[tuple[str, float]]:
        """``(task id, seconds since it was revoked)``, oldest first (what a state file keeps)."""
        self._purge()
        now = time.monotonic()
        return [(task_id, now - added) for task_id, added in self._items.items()]

    def restore(self, ages: Iterable[tuple[str, float]]) -> None:
        """Add ids revoked ``age`` seconds ago (read back from a state file), keeping the order
        by age and forgetting those already past ``expires``."""
        now = time.monotonic()
        for task_id, age in sorted(ages, key=lambda item: -item[1]):
            if age < self.expires and task_id not in self._items:
                self._items[task_id] = now - max(0.0, age)
        self._items = OrderedDict(sorted(self._items.items(), key=lambda item: item[1]))
        self._purge()

    def _purge(self) -> None:
        limit = time.monotonic() - self.expires
        while self._items:
            oldest, added = next(iter(self._items.items()))
            if len(self._items) > self.maxlen or added < limit:
                self._items.pop(oldest)
            else:
                break

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._items

    def __len__(self) -> int:
        return len(self._items)


class WorkerState:
    """What one worker knows about its own work; read by control and inspect commands."""

    def __init__(self) -> None:
        self.active: dict[str, Request] = {}
        self.revoked = RevokedSet()
        self.processed = 0
        self.succeeded = 0
        self.failed = 0
