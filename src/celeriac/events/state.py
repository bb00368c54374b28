"""The cluster state: events folded into workers and tasks, bounded in memory.

>>> state = State()
>>> async with EventReceiver(app.create_transport()) as events:
...     async for event in events:
...         state.event(event)
...         print([w.hostname for w in state.alive_workers()], state.task_count)

As Celery's ``celery.events.state.State`` (same names where Celery has them): ``workers`` by
hostname, ``tasks`` by id (an LRU of at most ``max_tasks_in_memory``, 10,000 by default: the
task touched least recently goes first), ``alive_workers()``, ``tasks_by_time()``,
``task_types()``, ``event_count`` and ``task_count``. A worker is alive while it has been heard
from within twice its heartbeat interval (``freq``); any event from it counts. celeriac adds
what a monitor needs without scanning: counts per task type and event type (``counts``),
per-second rates (``rates``), the latest failures (``recent_failures``), and forgets a worker
that has been lost for ``forget_lost_after`` seconds (one hour by default), so a cluster whose
workers come and go (autoscaled pods) does not grow the state for ever.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from celeriac.events.event import Event
from celeriac.events.rates import RateMeter
from celeriac.events.records import Task, Worker

#: How often (seconds) the state looks for lost workers to forget.
SWEEP_INTERVAL = 5.0


class State:
    """Folds events (dicts, as :class:`~celeriac.events.receiver.EventReceiver` yields them)."""

    def __init__(
        self,
        callback: Callable[[State, Event], Any] | None = None,
        *,
        max_tasks_in_memory: int = 10_000,
        max_workers_in_memory: int = 5_000,
        forget_lost_after: float = 3600.0,
        recent_failures: int = 100,
        rate_window: int = 10,
        on_node_join: Callable[[Worker], Any] | None = None,
        on_node_leave: Callable[[Worker], Any] | None = None,
    ) -> None:
        self.event_callback = callback
        self.max_tasks_in_memory = max_tasks_in_memory
        self.max_workers_in_memory = max_workers_in_memory
        self.forget_lost_after = forget_lost_after
        self.on_node_join = on_node_join
        self.on_node_leave = on_node_leave
        self.workers: OrderedDict[str, Worker] = OrderedDict()
        self.tasks: OrderedDict[str, Task] = OrderedDict()
        self.event_count = 0
        #: Tasks received (``task-received`` events), as Celery counts them.
        self.task_count = 0
        #: ``counts[task name][event type]``: how many of each event each task type had.
        self.counts: dict[str, Counter[str]] = {}
        #: Per-second rates keyed ``"<task name> <subject>"`` (``"shop.add succeeded"``).
        self.rates = RateMeter(rate_window)
        #: The latest failed tasks, newest last.
        self.recent_failures: deque[Task] = deque(maxlen=recent_failures)
        self._seen_types: set[str] = set()
        self._lock = threading.RLock()
        self._next_sweep = 0.0

    # -- folding ----------------------------------------------------------------------------
    def event(self, event: Event) -> tuple[tuple[Worker | Task, bool] | None, str]:
        """Fold in one event; returns ``((worker or task, created), subject)`` as Celery's
        ``State.event`` does (``(None, subject)`` for an event of another group)."""
        with self._lock:
            self.event_count += 1
            if self.event_callback is not None:
                self.event_callback(self, event)
            group, _, subject = str(event.get("type", "")).partition("-")
            now = event.get("local_received")
            self._maybe_sweep(now if isinstance(now, int | float) else time.time())
            if group == "worker":
                return self._worker_event(subject, event), subject
            if group == "task":
                return self._task_event(subject, event), subject
            return None, subject

    def _worker_event(self, subject: str, event: Event) -> tuple[Worker, bool] | None:
        hostname = event.get("hostname")
        if not isinstance(hostname, str):
            return None
        worker, created = self._get_worker(hostname)
        worker.event(subject, event)
        if self.on_node_join is not None and (created or subject == "online"):
            self.on_node_join(worker)
        if self.on_node_leave is not None and subject == "offline":
            self.on_node_leave(worker)
        return worker, created

    def _task_event(self, subject: str, event: Event) -> tuple[Task, bool] | None:
        uuid, hostname = event.get("uuid"), event.get("hostname")
        if not isinstance(uuid, str):
            return None
        task = self.tasks.get(uuid)
        created = task is None
        if task is None:
            task = self.tasks[uuid] = Task(uuid)
            while len(self.tasks) > self.max_tasks_in_memory:
                self.tasks.popitem(last=False)
        else:
            self.tasks.move_to_end(uuid)
        if subject == "sent":
            task.client = hostname if isinstance(hostname, str) else None
        elif isinstance(hostname, str):
            worker, _ = self._get_worker(hostname)
            worker.event(None, event)  # any event of a worker shows it alive
            worker.counts[event["type"]] += 1
            task.worker = worker
        if subject == "received":
            self.task_count += 1
        task.event(subject, event)
        name = task.name
        if name is not None:
            self._seen_types.add(name)
            counts = self.counts.get(name)
            if counts is None:
                counts = self.counts[name] = Counter()
            counts[event["type"]] += 1
            received = event.get("local_received")
            self.rates.add(f"{name} {subject}", received if isinstance(received, float) else None)
        if subject == "failed":
            self.recent_failures.append(task)
        return task, created

    def _get_worker(self, hostname: str) -> tuple[Worker, bool]:
        worker = self.workers.get(hostname)
        if worker is not None:
            self.workers.move_to_end(hostname)
            return worker, False
        worker = self.workers[hostname] = Worker(hostname)
        while len(self.workers) > self.max_workers_in_memory:
            self.workers.popitem(last=False)
        return worker, True

    def _maybe_sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        self.forget_lost(now)

    def forget_lost(self, now: float | None = None) -> list[str]:
        """Forget workers silent for longer than ``forget_lost_after`` (after they were lost);
        returns their hostnames. Their tasks keep what they knew."""
        at = time.time() if now is None else now
        with self._lock:
            gone = []
            for hostname, worker in self.workers.items():
                since = worker.lost_since
                lost = since is not None and not worker.alive_at(at)
                if lost and since is not None and at - since > self.forget_lost_after:
                    gone.append(hostname)
            for hostname in gone:
                del self.workers[hostname]
            return gone

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self.workers.clear()
            self.tasks.clear()
            self.counts.clear()
            self.recent_failures.clear()
            self._seen_types.clear()
            self.event_count = self.task_count = 0

    # -- reading ----------------------------------------------------------------------------
    def alive_workers(self, now: float | None = None) -> list[Worker]:
        at = time.time() if now is None else now
        return [w for w in list(self.workers.values()) if w.alive_at(at)]

    def lost_workers(self, now: float | None = None) -> list[Worker]:
        """Workers known and not alive: silent for over ``freq * 2`` s, or gone offline."""
        at = time.time() if now is None else now
        return [w for w in list(self.workers.values()) if not w.alive_at(at)]

    def get_or_create_worker(self, hostname: str) -> tuple[Worker, bool]:
        with self._lock:
            return self._get_worker(hostname)

    def tasks_by_time(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        """``(uuid, task)``, the task with the latest event first."""
        return islice(reversed(list(self.tasks.items())), limit)

    tasks_by_timestamp = tasks_by_time

    def tasks_by_type(self, name: str, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        return islice(((u, t) for u, t in self.tasks_by_time() if t.name == name), limit)

    def tasks_by_worker(
        self, hostname: str, limit: int | None = None
    ) -> Iterator[tuple[str, Task]]:
        return islice(
            (
                (u, t)
                for u, t in self.tasks_by_time()
                if t.worker is not None and t.worker.hostname == hostname
            ),
            limit,
        )

    def task_types(self) -> list[str]:
        """Every task name seen, sorted."""
        return sorted(self._seen_types)

    def __repr__(self) -> str:
        return (
            f"<State: events={self.event_count} tasks={self.task_count} "
            f"workers={len(self.workers)}>"
        )
