"""What each page shows, gathered from the state, the history and the polled details.

Plain functions returning template contexts: the web layer (:mod:`.web`) decides who may see
them and renders them, the live stream (:mod:`.live`) renders the same contexts again every
second. Nothing here reaches the broker; pages that need it (queues, dead letters, beat) get
what they need from the caller.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from celeriac.dashboard import charts, queries
from celeriac.dashboard.runtime import Dashboard
from celeriac.utils.urls import redact_url

#: Minutes the overview's charts span.
CHART_MINUTES = 60


def when(timestamp: Any) -> str:
    """A UNIX time as ``2024-05-01 12:00:00`` UTC (empty for none)."""
    if not isinstance(timestamp, int | float) or timestamp <= 0:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(timestamp: Any, now: float | None = None) -> str:
    if not isinstance(timestamp, int | float):
        return ""
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def header(dashboard: Dashboard) -> dict[str, Any]:
    """What every page's header shows: the broker (password redacted) and the pump's status."""
    return {
        "broker": redact_url(dashboard.app.broker_url),
        "listening": dashboard.listening,
        "pump_error": dashboard.last_error,
    }


def workers(dashboard: Dashboard) -> list[dict[str, Any]]:
    """The live workers (lost ones drop off), by name."""
    now = time.time()
    details = dashboard.cluster.workers
    rows = []
    for worker in sorted(dashboard.ingest.state.alive_workers(now), key=lambda w: w.hostname):
        found = details.get(worker.hostname)
        beat = worker.heartbeats[-1] if worker.heartbeats else None
        rows.append(
            {
                "hostname": worker.hostname,
                "pool": found.pool if found else "",
                "concurrency": found.concurrency if found else None,
                "queues": ", ".join(found.queues) if found else "",
                "active": worker.active,
                "processed": worker.processed,
                "loadavg": " ".join(f"{x:.2f}" for x in worker.loadavg or []),
                "heartbeat": ago(beat, now),
                "software": f"{worker.sw_ident or ''} {worker.sw_ver or ''}".strip(),
            }
        )
    return rows


def queues(dashboard: Dashboard) -> list[dict[str, Any]]:
    cluster = dashboard.cluster
    rows = []
    for name in cluster.queue_names():
        info = cluster.queues.get(name)
        rows.append(
            {
                "name": name,
                "depth": info.depth if info else None,
                "age": _age(info.oldest_age if info else None),
                "consumers": info.consumers if info else 0,
                "error": info.error if info else None,
                "updated": ago(info.updated) if info and info.updated else "",
            }
        )
    return rows


def _age(oldest: float | None) -> str | None:
    """The oldest ready message's age as shown; None when no message is ready, or when the
    broker cannot tell (the page tells the two apart with ``age_supported``)."""
    return seconds(oldest) if oldest else None


def overview(dashboard: Dashboard) -> dict[str, Any]:
    store = dashboard.store
    points = queries.series(store, CHART_MINUTES)
    last_hour = queries.totals(store, time.time() - 3600)
    finished = last_hour["succeeded"] + last_hour["failed"]
    state = dashboard.ingest.state
    throughput = charts.bars(
        f"Tasks finished per minute, last {CHART_MINUTES} min",
        [(p.counts["succeeded"], p.counts["failed"]) for p in points],
        ("ok", "bad"),
        ("succeeded", "failed"),
    )
    latency = charts.lines(
        "Seconds per task (minute averages)",
        [[p.wait_avg for p in points], [p.runtime_avg for p in points]],
        ("wait", "run"),
        ("sent → started", "runtime"),
    )
    waits = [p.wait_avg for p in points if p.wait_avg is not None]
    runs = [p.runtime_avg for p in points if p.runtime_avg is not None]
    return {
        "workers": workers(dashboard),
        "queues": queues(dashboard),
        "age_supported": dashboard.cluster.oldest_age_supported,
        "last_hour": last_hour,
        "failure_rate": (f"{100 * last_hour['failed'] / finished:.1f}%" if finished else "-"),
        "per_minute": f"{finished / 60:.1f}",
        "wait_now": seconds(waits[-1]) if waits else "-",
        "runtime_now": seconds(runs[-1]) if runs else "-",
        "throughput_chart": throughput,
        "latency_chart": latency,
        "events": state.event_count,
        "recent_failures": [
            {"id": t.uuid, "name": t.name, "exception": t.exception, "when": when(t.failed)}
            for t in reversed(list(state.recent_failures)[-10:])
        ],
    }


def tasks(dashboard: Dashboard, found: queries.TaskFilter, page: int) -> dict[str, Any]:
    result = queries.search(dashboard.store, found, page)
    for row in result.rows:
        row["when"] = when(row["updated"])
        row["runtime_text"] = seconds(row["runtime"])
    return {"page": result, "filter": found, "states": queries.STATES}


def task(dashboard: Dashboard, task_id: str) -> dict[str, Any] | None:
    store = dashboard.store
    row = queries.task(store, task_id)
    if row is None:
        return None
    events = queries.timeline(store, task_id)
    start = events[0]["timestamp"] if events else None
    for event in events:
        event["when"] = when(event["timestamp"])
        event["offset"] = f"+{seconds(event['timestamp'] - start)}" if start is not None else ""
    times = {
        key: when(row.get(key))
        for key in ("sent", "received", "started", "succeeded", "failed", "retried", "revoked")
        if row.get(key)
    }
    wait = None
    if row.get("started") and (row.get("sent") or row.get("received")):
        wait = seconds(row["started"] - (row.get("sent") or row["received"]))
    return {
        "task": row,
        "times": times,
        "wait": wait,
        "runtime": seconds(row.get("runtime")),
        "events": events,
        "tree": queries.workflow(store, row),
        "retryable": row.get("state") in ("FAILURE", "REVOKED", "REJECTED"),
        "running": row.get("state") in ("RECEIVED", "STARTED", "PENDING", "RETRY"),
    }


def audit(dashboard: Dashboard, page: int) -> dict[str, Any]:
    size = 100
    rows = [dict(r) for r in dashboard.store.audit_log(size + 1, (page - 1) * size)]
    for row in rows:
        row["when"] = when(row["at"])
    return {"rows": rows[:size], "page": page, "has_next": len(rows) > size}
