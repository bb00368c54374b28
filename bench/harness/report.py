"""The three outputs of a run: raw JSON, a markdown table of medians with ratios, a PNG chart.

Every system the run was asked for gets a row, whatever happened to it: a failed install, a
failed probe or a failed workload shows as such, with its reason, never as a missing row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.stats import BY_KEY, METRICS, Metric, ratio
from harness.systems import BASELINE

TABLE_METRICS = (
    "enqueue_per_s", "bulk_per_s", "drain_per_s", "drain_steady_per_s", "roundtrip_p50_ms",
    "roundtrip_p99_ms", "io_per_s", "idle_cpu_pct", "rss_mb",
)  # fmt: skip
CPU_METRICS = (
    "enqueue_producer_us", "enqueue_broker_us", "bulk_producer_us", "drain_worker_us",
    "drain_broker_us", "roundtrip_worker_us", "roundtrip_broker_us", "roundtrip_producer_us",
    "io_worker_us",
)  # fmt: skip
CPU_NOTE = (
    "CPU per task, in microseconds (in parentheses: times less than Celery prefork), read "
    "outside each system: the worker's whole process tree from /proc, Redis' `INFO cpu`, "
    "RabbitMQ's Erlang VM from /proc (broker: the one that carried the messages), the "
    "producer's process time over its timed calls. Drain and io count from the first task "
    "done to the last; a round trip counts every call, warm-up included. The worker's figure "
    "includes the task's own body (one redis-py INCR, which `bench/floor.py` measures alone)."
)
CHART_METRICS = (
    "enqueue_per_s", "bulk_per_s", "drain_per_s", "roundtrip_p50_ms", "io_per_s", "rss_mb",
)  # fmt: skip


def write_json(report: dict[str, Any], *paths: Path) -> None:
    text = json.dumps(report, indent=2, sort_keys=False) + "\n"
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _number(value: float, digits: int) -> str:
    if digits == 0 or value >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _times(value: float) -> str:
    if value >= 10:
        return f"{value:,.0f}x"
    if value >= 1:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def _median(entry: dict[str, Any] | None) -> float | None:
    return None if entry is None else entry.get("median")


def _cell(metric: Metric, entry: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    value = entry.get("median")
    if value is None:
        return "failed"
    text = _number(value, metric.digits)
    times = ratio(metric, value, _median(baseline))
    if times is not None:
        text += f" ({_times(times)})"
    if entry.get("capped"):
        text += "*"
    if entry.get("failed"):
        text += f", {entry['failed']}/{entry['failed'] + entry['runs']} failed"
    return text


def _spread(metric: Metric, entry: dict[str, Any]) -> str:
    if entry.get("median") is None:
        return "-"
    low, high = _number(entry["min"], metric.digits), _number(entry["max"], metric.digits)
    return f"{low}-{high}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def _head(metrics: list[Metric]) -> list[str]:
    head = ["system", *(f"{m.label} ({m.unit})" for m in metrics)]
    return [_row(head), _row(["---"] * len(head))]


def _medians(
    systems: dict[str, Any], base: dict[str, Any] | None, keys: tuple[str, ...]
) -> list[str]:
    """One table of medians, with each system's ratio to the baseline; a system that did not
    run says why in its row."""
    metrics = [BY_KEY[key] for key in keys]
    lines = _head(metrics)
    for name, entry in systems.items():
        if entry["status"] != "ok":
            reason = entry.get("reason", "")
            lines.append(_row([name, f"{entry['status']}: {reason}"] + [""] * (len(metrics) - 1)))
            continue
        summary = entry["summary"]
        lines.append(_row([name, *(_cell(m, summary[m.key], (base or {}).get(m.key))
                                   for m in metrics)]))  # fmt: skip
    return lines


def _spreads(systems: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    metrics = [BY_KEY[key] for key in keys]
    lines = _head(metrics)
    for name, entry in systems.items():
        if entry["status"] == "ok":
            summary = entry["summary"]
            lines.append(_row([name, *(_spread(m, summary[m.key]) for m in metrics)]))
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The table of medians (ratios to Celery prefork), the spread, failures and how each ran."""
    systems: dict[str, Any] = report["systems"]
    base = systems.get(BASELINE, {}).get("summary")
    machine, sizes = report["machine"], report["sizes"]
    lines = [
        f"Benchmark of {report['finished_at']}: `{report['command']}`",
        "",
        f"Machine: nproc {machine['nproc']}, {machine['cpu_model']}, "
        f"{machine['memory_gib']} GiB, Python {machine['python']}, Redis {machine['redis']} "
        "on loopback.",
        f"Sizes: enqueue {sizes['enqueue']:,}, bulk and drain {sizes['drain']:,}, io "
        f"{sizes['io']:,} tasks of 10 ms at I/O concurrency 100, roundtrip {sizes['roundtrip']} "
        f"sequential, idle {sizes['idle_seconds']:g} s; median of {sizes['repeats']} run(s); "
        "one worker, concurrency 2.",
        "",
        "In parentheses: times better than Celery prefork (rates: ours/theirs; latency, CPU and "
        "memory: theirs/ours). Drain runs from the worker's start until the counter that the "
        'tasks INCR reaches N; "steady" leaves the start-up out (from the first task done).',
        "",
        *_medians(systems, base, TABLE_METRICS),
        "",
        f"\\* stopped at the time cap ({sizes['drain_cap']:g} s for drain, {sizes['io_cap']:g} s "
        "for io, from the worker's start) in some runs: the rate is over the tasks done by then.",
        "",
        CPU_NOTE,
        "",
        *_medians(systems, base, CPU_METRICS),
        "",
        "Spread (min-max over the runs):",
        "",
        *_spreads(systems, TABLE_METRICS),
        "",
        *_spreads(systems, CPU_METRICS),
    ]
    failures = [
        f"- {name}, run {index}, {workload}: {step['error']}"
        for name, entry in systems.items()
        if entry["status"] == "ok"
        for index, run in enumerate(entry["runs"], 1)
        for workload, step in run.items()
        if isinstance(step, dict) and "error" in step
    ]
    if failures:
        lines += ["", "Failures:", "", *failures]
    lines += ["", "How each system ran:", ""]
    fields = ["version", "pool", "enqueue", "bulk", "io", "roundtrip"]
    lines += [_row(["system", *fields]), _row(["---"] * (len(fields) + 1))]
    for name, entry in systems.items():
        notes = entry.get("notes", {})
        extra = [f"{k}: {v}" for k, v in notes.items() if k not in fields]
        cells = [entry.get("version", "-"), *(notes.get(k, "-") for k in fields[1:])]
        if extra:
            cells[1] += " (" + "; ".join(extra) + ")"
        lines.append(_row([name, *cells]))
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], path: Path) -> str | None:
    """Grouped bars of the ratios, log scale; returns why not, if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed in the driver's venv (make bench installs it)"
    systems = {n: e for n, e in report["systems"].items() if e["status"] == "ok"}
    base = report["systems"].get(BASELINE, {}).get("summary")
    if not systems or not base:
        return "no baseline (celery-prefork) figures to compare with"
    metrics = [BY_KEY[key] for key in CHART_METRICS]
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(12, 5.5))
    colors = plt.get_cmap("tab20").colors  # the default cycle has 10: the 11th row repeated the 1st
    for index, (name, entry) in enumerate(systems.items()):
        xs, ys = [], []
        for position, metric in enumerate(metrics):
            times = ratio(metric, _median(entry["summary"][metric.key]), _median(base[metric.key]))
            if times is not None:
                xs.append(position + (index - (len(systems) - 1) / 2) * width)
                ys.append(times)
        ax.bar(xs, ys, width=width, label=name, color=colors[index % len(colors)])
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(metrics)), [m.label for m in metrics])
    ax.set_ylabel("times better than Celery prefork (log)")
    machine = report["machine"]
    ax.set_title(
        f"celeriac and peers on Redis, one worker, concurrency 2 "
        f"(nproc {machine['nproc']}, Python {machine['python']}, Redis {machine['redis']})"
    )
    ax.legend(ncols=4, fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


__all__ = ["METRICS", "chart", "markdown", "write_json"]
