"""Events in, history out: each event is folded into the bounded in-memory
:class:`~celeriac.events.State` (live workers, the latest tasks), the Prometheus metrics, and a
batch for the history file, which a writer thread flushes every ``flush_interval`` seconds or
every ``flush_max`` events.

Why this shape: Flower pins a core at 3-4k events/s (flower#759) because each event does all of
its work at once. Here the per-event work is a dict update and a few counter increments; the
SQLite work is done per batch (one upsert per task however many events it had) in a thread of
its own, where SQLite runs without the GIL. Memory is flat: the state keeps at most
``max_tasks_in_memory`` tasks, a batch at most ``flush_max`` events, and the writer's queue at
most ``MAX_PENDING_BATCHES`` batches (when the disk falls behind, folding waits for it rather
than piling batches up).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from celeriac.dashboard.metrics import Metrics
from celeriac.dashboard.store import MAX_TRACEBACK, SERIES_COUNTS, Batch, HistoryStore, clip
from celeriac.events.event import Event
from celeriac.events.records import Task, Worker
from celeriac.events.state import State

logger = logging.getLogger("celeriac.dashboard")

#: Batches waiting for the writer at most.
MAX_PENDING_BATCHES = 4
#: Task events whose detail the timeline keeps (the field shown beside the event).
_DETAIL = {"task-failed": "exception", "task-retried": "exception", "task-rejected": "requeue"}


def task_row(
    task: Task, updated: float, first_seen: float, queue_name: str | None = None
) -> tuple[Any, ...]:
    """The ``tasks`` row of ``task`` (column order of :data:`~.store.TASK_COLUMNS`)."""
    worker = task.worker.hostname if task.worker is not None else None
    return (
        task.uuid,
        task.name,
        task.state,
        worker,
        clip(task.args),
        clip(task.kwargs),
        clip(task.result),
        clip(task.exception),
        clip(task.traceback, MAX_TRACEBACK),
        task.root_id,
        task.parent_id,
        queue_name if isinstance(queue_name, str) else None,
        task.retries,
        clip(task.eta, 64),
        clip(task.expires, 64),
        task.sent,
        task.received,
        task.started,
        task.succeeded,
        task.failed,
        task.retried,
        task.revoked,
        task.rejected,
        task.runtime,
        updated,
        first_seen,
    )


class _Writer(threading.Thread):
    """Writes batches to the store, in order, one transaction each."""

    def __init__(self, store: HistoryStore) -> None:
        super().__init__(name="celeriac-dashboard-writer", daemon=True)
        self.store = store
        self.batches: queue.Queue[Batch | None] = queue.Queue(MAX_PENDING_BATCHES)
        self.written = 0
        self.failures = 0
        self._idle = threading.Condition()

    def run(self) -> None:
        while True:
            batch = self.batches.get()
            try:
                if batch is None:
                    return
                try:
                    self.store.write(batch)
                except Exception as exc:  # a full disk must not stop the dashboard
                    self.failures += 1
                    logger.error(
                        "history: a batch of %d events was lost: %s", len(batch.events), exc
                    )
                else:
                    self.written += len(batch.events)
            finally:
                self.batches.task_done()

    def drain(self) -> None:
        """Wait until every batch handed over so far is written."""
        self.batches.join()


class Ingest:
    """Folds events (see the module docstring). :meth:`fold` is not thread-safe: one thread
    folds (the event pump's); readers use :attr:`state` (which locks) and the store."""

    def __init__(
        self,
        store: HistoryStore,
        metrics: Metrics,
        *,
        queue_of: Callable[[str], str | None] | None = None,
        max_tasks_in_memory: int = 2000,
        forget_lost_after: float = 600.0,
        flush_interval: float = 0.5,
        flush_max: int = 5000,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.state = State(
            max_tasks_in_memory=max_tasks_in_memory,
            forget_lost_after=forget_lost_after,
            recent_failures=50,
        )
        self.queue_of = queue_of or (lambda name: None)
        self.flush_interval = flush_interval
        self.flush_max = flush_max
        self.batch = Batch()
        #: Tasks touched since the last flush: id -> (task, local time of its latest event).
        self._touched: dict[str, tuple[Task, float]] = {}
        self._next_flush = time.monotonic() + flush_interval
        self._queues: dict[str, str | None] = {}
        self._known_workers: set[str] = set()
        self._writer = _Writer(store)
        self._writer.start()
        self.events = 0

    # -- folding ----------------------------------------------------------------------------
    def fold(self, event: Event) -> None:
        """One event, as :class:`~celeriac.events.EventReceiver` yields it."""
        self.events += 1
        self.metrics.events.inc()
        found, subject = self.state.event(event)
        if found is None:
            return
        record = found[0]
        if isinstance(record, Task):
            self._task_event(record, subject, event)
        elif isinstance(record, Worker):
            self._known_workers.add(record.hostname)
            up = subject != "offline"
            self.metrics.worker(record.hostname, up, record.active if up else 0)
        if len(self.batch.events) >= self.flush_max:
            self.flush()

    def _task_event(self, task: Task, subject: str, event: Event) -> None:
        local = event.get("local_received")
        at = float(local) if isinstance(local, int | float) else time.time()
        self._touched[task.uuid] = (task, at)
        type_ = str(event["type"])
        stamp = event.get("timestamp")
        timestamp = float(stamp) if isinstance(stamp, int | float) else at
        hostname = event.get("hostname")
        detail_field = _DETAIL.get(type_)
        detail = event.get(detail_field) if detail_field else None
        if type_ == "task-succeeded":
            detail = event.get("runtime")
        self.batch.events.append(
            (
                task.uuid,
                type_,
                timestamp,
                hostname,
                clip(detail, 512) if detail is not None else None,
            )
        )
        name = task.name or ""
        queue_name = self._queue(task, name)
        runtime = wait = None
        if subject == "succeeded" and isinstance(task.runtime, int | float):
            runtime = float(task.runtime)
        elif subject == "started" and task.started is not None:
            since = task.sent if task.sent is not None else task.received
            if since is not None:
                wait = max(0.0, float(task.started) - float(since))
        if subject in SERIES_COUNTS:
            point = self.batch.point(at, name)
            point.counts[subject] = point.counts.get(subject, 0) + 1
            if runtime is not None:
                point.runtime_sum += runtime
                point.runtime_n += 1
                point.runtime_max = max(point.runtime_max, runtime)
            if wait is not None:
                point.wait_sum += wait
                point.wait_n += 1
                point.wait_max = max(point.wait_max, wait)
        self.metrics.task_event(
            subject,
            task.name,
            hostname if isinstance(hostname, str) else None,
            queue_name,
            exception=task.exception if subject == "failed" else None,
            runtime=runtime,
            wait=wait,
        )

    def _queue(self, task: Task, name: str) -> str | None:
        """The queue of a task: from its ``task-sent`` event, else where the app routes it."""
        sent_queue = task.__dict__.get("queue")
        if isinstance(sent_queue, str) and sent_queue:
            return sent_queue
        if name not in self._queues:
            if len(self._queues) >= 10_000:
                self._queues.clear()
            try:
                self._queues[name] = self.queue_of(name) if name else None
            except Exception:  # a router that fails for a foreign task name
                self._queues[name] = None
        return self._queues[name]

    # -- flushing ---------------------------------------------------------------------------
    def due(self) -> bool:
        return time.monotonic() >= self._next_flush

    def flush(self) -> None:
        """Hand the batch to the writer (waiting while it is ``MAX_PENDING_BATCHES`` behind)."""
        self._next_flush = time.monotonic() + self.flush_interval
        if not self._touched and not self.batch:
            return
        now = time.time()
        batch, self.batch = self.batch, Batch()
        for uuid, (task, at) in self._touched.items():
            batch.tasks[uuid] = task_row(task, at, now, self._queue(task, task.name or ""))
        self._touched = {}
        self._writer.batches.put(batch)

    def drain(self) -> None:
        """Flush and wait until everything folded so far is in the store."""
        self.flush()
        self._writer.drain()

    def sweep(self, now: float | None = None) -> None:
        """Mark lost workers down in the metrics and remove the series of forgotten ones."""
        at = time.time() if now is None else now
        for worker in self.state.lost_workers(at):
            self.metrics.worker(worker.hostname, False, 0)
        self.state.forget_lost(at)
        for hostname in list(self._known_workers):
            if hostname not in self.state.workers:
                self._known_workers.discard(hostname)
                self.metrics.forget_worker(hostname)

    @property
    def write_failures(self) -> int:
        return self._writer.failures

    def close(self) -> None:
        """Write what is left and stop the writer."""
        self.drain()
        self._writer.batches.put(None)
        self._writer.join(timeout=10)
