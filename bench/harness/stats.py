"""From raw runs to the figures the table shows: median and min-max per metric, and ratios.

A ratio is always "times better than Celery prefork": for a rate it is ours / theirs, for a
latency, CPU or memory figure theirs / ours, so that every bar above 1 means better.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str
    workload: str
    field: str
    label: str
    unit: str
    higher_is_better: bool
    digits: int = 0


METRICS: tuple[Metric, ...] = (
    Metric("enqueue_per_s", "enqueue", "per_s", "enqueue", "tasks/s", True),
    Metric("bulk_per_s", "bulk", "per_s", "bulk", "tasks/s", True),
    Metric("drain_per_s", "drain", "per_s", "drain", "tasks/s", True),
    Metric("drain_steady_per_s", "drain", "steady_per_s", "drain, steady", "tasks/s", True),
    Metric("roundtrip_p50_ms", "roundtrip", "p50_ms", "roundtrip p50", "ms", False, 2),
    Metric("roundtrip_p99_ms", "roundtrip", "p99_ms", "roundtrip p99", "ms", False, 2),
    Metric("io_per_s", "io", "per_s", "io (10 ms sleeps)", "tasks/s", True),
    Metric("idle_cpu_pct", "idle", "cpu_pct", "idle CPU", "%", False, 2),
    Metric("rss_mb", "drain", "rss_mb", "RSS after drain", "MiB", False, 1),
    # CPU per task in microseconds (harness/cpu.py): who paid what, read outside each system
    Metric("enqueue_producer_us", "enqueue", "producer_cpu_us", "enqueue, producer", "us", False),
    Metric("enqueue_broker_us", "enqueue", "broker_cpu_us", "enqueue, broker", "us", False),
    Metric("bulk_producer_us", "bulk", "producer_cpu_us", "bulk, producer", "us", False),
    Metric("drain_worker_us", "drain", "worker_cpu_us", "drain, worker", "us", False),
    Metric("drain_broker_us", "drain", "broker_cpu_us", "drain, broker", "us", False),
    Metric("roundtrip_worker_us", "roundtrip", "worker_cpu_us", "roundtrip, worker", "us", False),
    Metric("roundtrip_broker_us", "roundtrip", "broker_cpu_us", "roundtrip, broker", "us", False),
    Metric(
        "roundtrip_producer_us", "roundtrip", "producer_cpu_us", "roundtrip, caller", "us", False
    ),
    Metric("io_worker_us", "io", "worker_cpu_us", "io, worker", "us", False),
)
BY_KEY = {metric.key: metric for metric in METRICS}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: median, min, max over the runs where it succeeded, and the errors of the rest."""
    summary: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        values: list[float] = []
        errors: list[str] = []
        capped = 0
        for run in runs:
            step = run.get(metric.workload)
            if step is None:
                errors.append("not run")
            elif "error" in step:
                errors.append(str(step["error"]))
            elif metric.field in step:
                values.append(float(step[metric.field]))
                capped += metric.higher_is_better and bool(step.get("capped"))
        entry: dict[str, Any] = {"runs": len(values), "failed": len(errors), "capped": capped}
        if values:
            entry.update(
                median=statistics.median(values), min=min(values), max=max(values), values=values
            )
        if errors:
            entry["errors"] = sorted(set(errors))
        summary[metric.key] = entry
    return summary


def ratio(metric: Metric, value: float | None, baseline: float | None) -> float | None:
    """Times better than the baseline (see the module docstring); None when undefined."""
    if value is None or baseline is None:
        return None
    if baseline <= 0 or value <= 0:
        return None
    return value / baseline if metric.higher_is_better else baseline / value
