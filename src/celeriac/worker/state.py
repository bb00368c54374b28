"""Worker-local state: which tasks run now, and which ids are revoked.

Revoked ids live in a bounded, expiring set (Celery's ``worker_revoked_max`` idea): a revoke for
a task that never arrives must not grow the worker's memory forever.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from celeriac.context import Request

REVOKES_MAX = 50_000
REVOKE_EXPIRES = 10_800.0


class RevokedSet:
    """A set of task ids that forgets the oldest past ``maxlen`` or ``expires`` seconds."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES) -> None:
        self._items: OrderedDict[str, float] = OrderedDict()
        self.maxlen = maxlen
        self.expires = expires

    def add(self, task_id: str) -> None:
        self._items[task_id] = time.monotonic()
        self._items.move_to_end(task_id)
        self._purge()

    def discard(self, task_id: str) -> None:
        self._items.pop(task_id, None)

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
