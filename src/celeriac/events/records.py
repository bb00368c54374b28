"""What the cluster state knows of one worker and of one task, folded from their events.

The names and fields are Celery's (``celery.events.state.Worker`` and ``Task``): a dashboard
written against Celery's state reads these the same way (``worker.alive``, ``worker.loadavg``,
``task.state``, ``task.succeeded``, ``task.runtime``...). Added here: each task keeps the
history of its events (type, timestamp), bounded, and each worker its counts per event type.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, ClassVar

from celeriac import states
from celeriac.events.event import Event

#: Celery's ``HEARTBEAT_EXPIRE_WINDOW``: a worker is lost after ``freq * 2`` s of silence.
HEARTBEAT_EXPIRE_WINDOW = 200
#: Heartbeats kept per worker (their arrival times), as Celery keeps them.
HEARTBEAT_MAX = 4
#: Events kept in one task's history (a task retried many times keeps its latest ones).
HISTORY_MAX = 64

#: Which state each task event puts a task in (Celery's ``TASK_EVENT_TO_STATE``).
TASK_EVENT_TO_STATE = {
    "sent": states.PENDING,
    "received": states.RECEIVED,
    "started": states.STARTED,
    "failed": states.FAILURE,
    "retried": states.RETRY,
    "succeeded": states.SUCCESS,
    "revoked": states.REVOKED,
    "rejected": states.REJECTED,
}
#: How far along a task each state is: an event for an earlier state arriving late (events
#: of one task may come from several processes) only adds its fields, it does not move the
#: task back. RETRY is always taken (the task runs again after it).
_PROGRESS = {
    states.PENDING: 0,
    states.RECEIVED: 1,
    states.STARTED: 2,
    states.SUCCESS: 3,
    states.FAILURE: 3,
    states.REVOKED: 3,
    states.REJECTED: 3,
}
#: The fields an out-of-order event of that state may still contribute (Celery's merge rules).
_RECEIVED_FIELDS = frozenset(
    {"name", "args", "kwargs", "parent_id", "root_id", "retries", "eta", "expires"}
)
_MERGE_FIELDS = {
    states.RECEIVED: _RECEIVED_FIELDS,
    states.PENDING: _RECEIVED_FIELDS | {"exchange", "routing_key", "queue"},
}
#: Envelope fields that describe the sender, not the task.
_ENVELOPE = frozenset({"type", "hostname", "pid", "utcoffset", "local_received", "uuid"})


class Worker:
    """One worker as its events describe it."""

    expire_window: ClassVar[int] = HEARTBEAT_EXPIRE_WINDOW

    def __init__(self, hostname: str, freq: float = 60.0) -> None:
        self.hostname = hostname
        self.pid: int | None = None
        self.freq = freq
        #: Local arrival times of its latest events (heartbeats and task events), oldest first.
        self.heartbeats: list[float] = []
        self.clock = 0
        self.active: int | None = None
        self.processed: int | None = None
        self.loadavg: list[float] | None = None
        self.sw_ident: str | None = None
        self.sw_ver: str | None = None
        self.sw_sys: str | None = None
        #: True once it said ``worker-offline`` (until it says anything else).
        self.offline = False
        #: Task events seen from it, by type (``task-succeeded``: 120...).
        self.counts: Counter[str] = Counter()
        #: Local time of its latest event (None before any).
        self.last_seen: float | None = None

    def event(self, subject: str | None, event: Event) -> None:
        """Fold in a ``worker-<subject>`` event (``None``: a task event from this worker,
        which only shows it is alive)."""
        if subject is not None:
            for key in ("pid", "freq", "clock", "active", "processed", "loadavg"):
                if key in event:
                    setattr(self, key, event[key])
            for key in ("sw_ident", "sw_ver", "sw_sys"):
                if key in event:
                    setattr(self, key, event[key])
        received = event.get("local_received")
        if isinstance(received, int | float):
            self.last_seen = received
        if subject == "offline":
            self.offline = True
            self.heartbeats.clear()
            return
        self.offline = False
        if not isinstance(received, int | float):
            return
        beats = self.heartbeats
        if beats and received >= beats[-1]:
            beats.append(received)
        else:
            beats.append(received)
            beats.sort()
        if len(beats) > HEARTBEAT_MAX:
            del beats[: len(beats) - HEARTBEAT_MAX]

    @property
    def heartbeat_expires(self) -> float:
        """When it counts as lost if it stays silent (0 if it never sent anything)."""
        if not self.heartbeats:
            return 0.0
        return self.heartbeats[-1] + float(self.freq) * (self.expire_window / 100)

    @property
    def lost_since(self) -> float | None:
        """Since when it counts as lost: when it went offline, or when its last heartbeat
        expired (None if it was never heard from)."""
        if self.offline:
            return self.last_seen
        return self.heartbeat_expires if self.heartbeats else self.last_seen

    def alive_at(self, now: float) -> bool:
        return bool(self.heartbeats) and now < self.heartbeat_expires

    @property
    def alive(self) -> bool:
        """Heard from within ``freq * 2`` seconds (Celery's rule) and not gone offline."""
        return self.alive_at(time.time())

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    @property
    def id(self) -> str:
        return f"{self.hostname}.{self.pid}"

    def __repr__(self) -> str:
        return f"<Worker {self.hostname}: {self.status_string}, active={self.active}>"


class Task:
    """One task as its events describe it (Celery's fields; unknown fields are kept too)."""

    name: str | None = None
    received: float | None = None
    sent: float | None = None
    started: float | None = None
    succeeded: float | None = None
    failed: float | None = None
    retried: float | None = None
    revoked: float | None = None
    rejected: float | None = None
    args: str | None = None
    kwargs: str | None = None
    eta: str | None = None
    expires: str | None = None
    retries: int | None = None
    result: str | None = None
    exception: str | None = None
    traceback: str | None = None
    timestamp: float | None = None
    runtime: float | None = None
    exchange: str | None = None
    routing_key: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    #: The hostname of the client that sent it (from ``task-sent``).
    client: str | None = None
    state: str = states.PENDING
    clock: int = 0

    _info_fields: ClassVar[tuple[str, ...]] = (
        "args", "kwargs", "retries", "result", "eta", "runtime", "expires", "exception",
        "exchange", "routing_key", "root_id", "parent_id",
    )  # fmt: skip
    _fields: ClassVar[tuple[str, ...]] = (
        "uuid", "name", "state", "received", "sent", "started", "rejected", "succeeded",
        "failed", "retried", "revoked", "args", "kwargs", "eta", "expires", "retries",
        "worker", "result", "exception", "timestamp", "runtime", "traceback", "exchange",
        "routing_key", "clock", "client", "root_id", "parent_id",
    )  # fmt: skip

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.worker: Worker | None = None
        #: ``(event type, timestamp)`` of its events, in arrival order, the latest kept.
        self.history: list[tuple[str, float]] = []

    def event(self, subject: str, event: Event) -> None:
        """Fold in a ``task-<subject>`` event."""
        timestamp = event.get("timestamp")
        state = TASK_EVENT_TO_STATE.get(subject)
        if state is None:
            state = subject.upper()  # a custom task event
        else:
            setattr(self, subject, timestamp)
        self.history.append((event["type"], timestamp if timestamp is not None else 0.0))
        if len(self.history) > HISTORY_MAX:
            del self.history[0]
        fields = {k: v for k, v in event.items() if k not in _ENVELOPE}
        late = (
            state != states.RETRY
            and self.state != states.RETRY
            and _PROGRESS.get(state, 3) < _PROGRESS.get(self.state, 0)
        )
        if late:
            keep = _MERGE_FIELDS.get(state, frozenset())
            fields = {k: v for k, v in fields.items() if k in keep}
        else:
            fields["state"] = state
            fields["timestamp"] = timestamp
        self.__dict__.update(fields)

    @property
    def id(self) -> str:
        return self.uuid

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    @property
    def origin(self) -> str | None:
        return self.client if self.worker is None else self.worker.id

    def info(self, fields: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The fields worth showing that have a value (Celery's ``Task.info``)."""
        names = self._info_fields if fields is None else fields
        return {k: v for k in names if (v := getattr(self, k, None)) is not None}

    def as_dict(self) -> dict[str, Any]:
        """Every field, the worker as its hostname (JSON-ready, for a dashboard's API)."""
        out = {k: getattr(self, k, None) for k in self._fields}
        out["worker"] = self.worker.hostname if self.worker is not None else None
        out["history"] = [list(item) for item in self.history]
        return out

    def __repr__(self) -> str:
        return f"<Task {self.name}[{self.uuid}] {self.state}>"
