"""Worker-local state: which tasks run now, and what is revoked.

Revokes live in a bounded, expiring set (Celery's ``REVOKES_MAX``/``REVOKE_EXPIRES``): a revoke
for a task that never arrives must not grow the worker's memory forever. A revoke names a task
id, or a whole workflow by its root id or a task's parent id (``revoke(..., by="root_id")``):
:meth:`RevokedSet.is_revoked` answers for a message from all three. The live revokes kept on the
broker are loaded at start (:mod:`celeriac.worker.statedb`); with ``--statedb`` the set is also
kept in a file.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from celeriac.context import Request

if TYPE_CHECKING:
    from celeriac.control.revokes import RevokeStore

REVOKES_MAX = 50_000
REVOKE_EXPIRES = 10_800.0
#: What a revoke may name besides a task id.
WORKFLOW_KEYS = ("root_id", "parent_id")

#: A task id, or ``("root_id", id)`` / ``("parent_id", id)``.
Key = str | tuple[str, str]


def _key(value: str, by: str) -> Key:
    return value if by == "id" else (by, value)


class RevokedSet:
    """Revoked task ids (and root and parent ids) that forget the oldest past ``maxlen`` or
    ``expires`` seconds. ``task_id in revoked`` asks about a task id alone."""

    def __init__(self, maxlen: int = REVOKES_MAX, expires: float = REVOKE_EXPIRES) -> None:
        self._items: OrderedDict[Key, float] = OrderedDict()
        self._workflows = 0  # how many root/parent entries: none, the usual case, costs nothing
        self.maxlen = maxlen
        self.expires = expires
        #: Bumped by every change, so a saver knows whether there is anything new to write.
        self.changes = 0
        #: Told of every revoke added (a prefork pool whose children fetch passes them on).
        self.watchers: list[Callable[[list[Key]], None]] = []

    def add(self, task_id: str, by: str = "id") -> None:
        """Revoke ``task_id`` now (a root or parent id with ``by``)."""
        key = _key(task_id, by)
        if self._items.pop(key, None) is None and not isinstance(key, str):
            self._workflows += 1
        self._items[key] = time.monotonic()
        self.changes += 1
        self._purge()
        self._tell([key])

    def load(self, revokes: Iterable[tuple[str, str, float]]) -> int:
        """Add revokes made elsewhere earlier: ``(id, by, seconds it has left to live)``; one
        that has more than ``expires`` left lives ``expires`` from now. Returns how many were
        new here."""
        now = time.monotonic()
        new: list[Key] = []
        for value, by, remaining in revokes:
            key = _key(value, by)
            added = now - max(0.0, self.expires - remaining)
            previous = self._items.get(key)
            if previous is None:
                new.append(key)
                if not isinstance(key, str):
                    self._workflows += 1
            if previous is None or added > previous:
                self._items[key] = added
        if new:
            self.changes += 1
        self._items = self._sorted()
        self._purge()
        if new:
            self._tell(new)
        return len(new)

    def _tell(self, keys: list[Key]) -> None:
        for watcher in self.watchers:
            watcher(keys)

    def discard(self, task_id: str, by: str = "id") -> None:
        key = _key(task_id, by)
        if self._items.pop(key, None) is not None:
            if not isinstance(key, str):
                self._workflows -= 1
            self.changes += 1

    def is_revoked(
        self, task_id: str, root_id: str | None = None, parent_id: str | None = None
    ) -> bool:
        """Whether a task of this id, root and parent must not run."""
        items = self._items
        if task_id in items:
            return True
        if not self._workflows:
            return False
        return (
            ("root_id", root_id or task_id) in items  # a root task is its own workflow's root
            or (parent_id is not None and ("parent_id", parent_id) in items)
        )

    def why(self, task_id: str, root_id: str | None, parent_id: str | None) -> str | None:
        """``"revoked"``, ``"its workflow <root> was revoked"``... or None."""
        if task_id in self._items:
            return "revoked"
        if ("root_id", root_id or task_id) in self._items:
            return f"its workflow (root {root_id or task_id}) was revoked"
        if parent_id is not None and ("parent_id", parent_id) in self._items:
            return f"the tasks of {parent_id} were revoked"
        return None

    def keys(self) -> list[Key]:
        """Every revoke held: a task id, or ``(by, id)`` for a workflow's root or parent."""
        return list(self._items)

    def ids(self) -> list[str]:
        """The revoked task ids, oldest first (what ``inspect revoked`` lists)."""
        self._purge()
        return [key for key in self._items if isinstance(key, str)]

    def workflows(self) -> list[tuple[str, str]]:
        """``(by, id)`` of the root and parent revokes."""
        return [key for key in self._items if not isinstance(key, str)]

    def ages(self) -> list[tuple[str, float]]:
        """``(task id, seconds since it was revoked)``, oldest first (what a state file keeps)."""
        self._purge()
        now = time.monotonic()
        return [(key, now - added) for key, added in self._items.items() if isinstance(key, str)]

    def workflow_ages(self) -> list[tuple[str, float, str]]:
        """``(id, seconds since it was revoked, "root_id" or "parent_id")``, oldest first."""
        self._purge()
        now = time.monotonic()
        return [
            (key[1], now - added, key[0])
            for key, added in self._items.items()
            if not isinstance(key, str)
        ]

    def restore(self, ages: Iterable[tuple[str, float] | tuple[str, float, str]]) -> None:
        """Add ids revoked ``age`` seconds ago (read back from a state file), keeping the order
        by age and forgetting those already past ``expires``."""
        now = time.monotonic()
        for entry in ages:
            task_id, age = entry[0], entry[1]
            by = entry[2] if len(entry) > 2 else "id"
            key = _key(task_id, by)
            if age < self.expires and key not in self._items:
                self._items[key] = now - max(0.0, age)
                if not isinstance(key, str):
                    self._workflows += 1
        self._items = self._sorted()
        self._purge()

    def _sorted(self) -> OrderedDict[Key, float]:
        return OrderedDict(sorted(self._items.items(), key=lambda item: item[1]))

    def _purge(self) -> None:
        limit = time.monotonic() - self.expires
        while self._items:
            oldest, added = next(iter(self._items.items()))
            if len(self._items) > self.maxlen or added < limit:
                self._items.pop(oldest)
                if not isinstance(oldest, str):
                    self._workflows -= 1
            else:
                break

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._items

    def __len__(self) -> int:
        return len(self._items)


class ActiveRequests(dict[str, Request]):
    """The requests running now, by id; each start is timed and counted by task name (what
    ``inspect active`` and ``stats`` report), as the consumer adds it."""

    def __init__(self) -> None:
        super().__init__()
        #: When each running request started (UNIX time).
        self.started: dict[str, float] = {}
        #: Requests started so far, by task name (Celery's ``stats()["total"]``).
        self.total: Counter[str] = Counter()

    def __setitem__(self, task_id: str, request: Request) -> None:
        if task_id not in self:
            self.started[task_id] = time.time()
            self.total[request.task] += 1
        super().__setitem__(task_id, request)

    def __delitem__(self, task_id: str) -> None:
        self.started.pop(task_id, None)
        super().__delitem__(task_id)

    def pop(self, task_id: str, *default: Any) -> Any:
        self.started.pop(task_id, None)
        return super().pop(task_id, *default)


class WorkerState:
    """What one worker knows about its own work; read by control and inspect commands."""

    def __init__(self) -> None:
        self.active = ActiveRequests()
        self.revoked = RevokedSet()
        #: When the worker was made (monotonic), for ``stats()["uptime"]``.
        self.started = time.monotonic()
        self.processed = 0
        self.succeeded = 0
        self.failed = 0
        #: The broker's revoke store, while the worker runs (see :mod:`celeriac.worker.statedb`).
        self.revoke_store: RevokeStore | None = None
