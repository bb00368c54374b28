"""Prometheus metrics under celery-exporter's names, so existing Grafana dashboards and alerts
for Celery work unchanged against ``/metrics``.

celery-exporter's names and labels: ``celery_task_<event>_total`` counters labelled ``name``,
``hostname``, ``queue_name`` (``task_failed`` adds ``exception``: the class name),
``celery_task_runtime`` (histogram), ``celery_worker_up`` and ``celery_worker_tasks_active``
(``hostname``), ``celery_queue_length``, ``celery_active_consumer_count`` and
``celery_active_worker_count`` (``queue_name``). Added here: ``celery_task_wait_seconds`` (sent
or received to started, the time a task waited for a worker) and
``celery_queue_oldest_message_age_seconds`` (where the broker can tell).

Labels stay bounded: no task ids; at most ``max_names`` task names and ``max_exceptions``
exception classes (the rest are counted as ``other``); ``task-sent`` events count under the
hostname ``generic`` (each client process names itself ``gen<pid>@host``, which would add a series
per process, as celery-exporter's ``--generic-hostname-task-sent-metric`` avoids); a worker's
series are removed once it has been lost for a while (:meth:`Metrics.forget_worker`).
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

#: The task events counted, as celery-exporter counts them.
COUNTED = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked", "rejected")
#: Hostname label of ``task-sent`` events.
GENERIC_HOST = "generic"
#: The label value that stands for names past the bound.
OTHER = "other"
#: Buckets of the wait histogram (seconds): queueing is often longer than running.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

_EXCEPTION_CLASS = re.compile(r"^\s*([A-Za-z_][\w.]*)")


def exception_class(text: str | None) -> str:
    """``ValueError`` from ``"ValueError('bad')"`` (empty when there is none)."""
    found = _EXCEPTION_CLASS.match(text or "")
    return found.group(1) if found else ""


class _Bounded:
    """A set of label values that stops growing at ``limit`` (later values map to ``other``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


class Metrics:
    """The dashboard's registry (its own, not the process-global one) and what feeds it."""

    def __init__(self, max_names: int = 1000, max_exceptions: int = 200) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._names = _Bounded(max_names)
        self._exceptions = _Bounded(max_exceptions)
        self._lock = threading.Lock()
        #: Cached children by (metric, labels): a dict lookup per event instead of ``labels()``.
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}
        #: The label tuples each worker hostname appears in, to remove when it is forgotten.
        self._by_host: dict[str, set[tuple[str, tuple[str, ...]]]] = {}
        task_labels = ["name", "hostname", "queue_name"]
        reg = self.registry
        self.task_counters: dict[str, Counter] = {}
        for subject in COUNTED:
            labels = [*task_labels, "exception"] if subject == "failed" else task_labels
            self.task_counters[subject] = Counter(
                f"celery_task_{subject}",
                f"Tasks that had a task-{subject} event.",
                labels,
                registry=reg,
            )
        self.runtime = Histogram(
            "celery_task_runtime", "Task runtime (seconds).", task_labels, registry=reg
        )
        self.wait = Histogram(
            "celery_task_wait_seconds",
            "Time from a task's sending (or, without task-sent events, its reception) to its"
            " start: how long it waited for a worker.",
            ["name", "queue_name"],
            buckets=WAIT_BUCKETS,
            registry=reg,
        )
        self.worker_up = Gauge(
            "celery_worker_up", "1 while a worker sends heartbeats.", ["hostname"], registry=reg
        )
        self.worker_active = Gauge(
            "celery_worker_tasks_active",
            "Tasks a worker is running now.",
            ["hostname"],
            registry=reg,
        )
        self.queue_length = Gauge(
            "celery_queue_length", "Messages waiting in a queue.", ["queue_name"], registry=reg
        )
        self.queue_age = Gauge(
            "celery_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting in a queue (where the broker can tell).",
            ["queue_name"],
            registry=reg,
        )
        self.consumers = Gauge(
            "celery_active_consumer_count",
            "Live workers consuming a queue.",
            ["queue_name"],
            registry=reg,
        )
        self.worker_count = Gauge(
            "celery_active_worker_count",
            "Live workers consuming a queue (celery-exporter's second name for it).",
            ["queue_name"],
            registry=reg,
        )
        self.events = Counter(
            "celeriac_dashboard_events", "Events the dashboard received.", registry=reg
        )

    # -- children ---------------------------------------------------------------------------
    def _child(self, metric: MetricWrapperBase, labels: tuple[str, ...], host: str | None) -> Any:
        key = (metric._name, labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = metric.labels(*labels)
                self._children[key] = child
                if host is not None and host != GENERIC_HOST:
                    self._by_host.setdefault(host, set()).add(key)
        return child

    # -- feeding ----------------------------------------------------------------------------
    def task_event(
        self,
        subject: str,
        name: str | None,
        hostname: str | None,
        queue: str | None,
        *,
        exception: str | None = None,
        runtime: float | None = None,
        wait: float | None = None,
    ) -> None:
        """Count one task event (``subject``: ``succeeded``...) and observe its times."""
        counter = self.task_counters.get(subject)
        if counter is None:
            return
        label_name = self._names(name or "")
        host = GENERIC_HOST if subject == "sent" else (hostname or "")
        queue_name = queue or ""
        labels: tuple[str, ...] = (label_name, host, queue_name)
        if subject == "failed":
            labels = (*labels, self._exceptions(exception_class(exception)))
        self._child(counter, labels, host).inc()
        if runtime is not None and subject == "succeeded":
            self._child(self.runtime, (label_name, host, queue_name), host).observe(runtime)
        if wait is not None and wait >= 0:
            self._child(self.wait, (label_name, queue_name), None).observe(wait)

    def worker(self, hostname: str, up: bool, active: int | None) -> None:
        self._child(self.worker_up, (hostname,), hostname).set(1 if up else 0)
        if active is not None or not up:
            self._child(self.worker_active, (hostname,), hostname).set(active if up else 0)

    def forget_worker(self, hostname: str) -> None:
        """Remove every series labelled with ``hostname`` (a worker lost for long enough)."""
        with self._lock:
            keys = self._by_host.pop(hostname, set())
            metrics = {m._name: m for m in self._all_labelled()}
            for name, labels in keys:
                self._children.pop((name, labels), None)
                metric = metrics.get(name)
                if metric is not None:
                    with contextlib.suppress(KeyError):
                        metric.remove(*labels)

    def _all_labelled(self) -> list[MetricWrapperBase]:
        return [
            *self.task_counters.values(),
            self.runtime,
            self.worker_up,
            self.worker_active,
        ]

    def queue(
        self, name: str, length: int | None, oldest_age: float | None, consumers: int
    ) -> None:
        if length is not None:
            self.queue_length.labels(name).set(length)
        if oldest_age is not None:
            self.queue_age.labels(name).set(oldest_age)
        self.consumers.labels(name).set(consumers)
        self.worker_count.labels(name).set(consumers)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
