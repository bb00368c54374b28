"""A soak: a million tasks through one worker on Redis; its memory and Redis' must stay flat.

``make soak`` (celeriac's own venv, only ``celeriac[redis]``; 25 to 35 minutes on a 2-core
machine shared with test runs, 500 to 800 tasks/s). A producer thread here publishes
``soak.noop`` tasks in batches (``send_many``) whenever fewer than ``--max-pending`` are waiting,
so the queue stays bounded and what grows, if anything, is the worker or the result store, never
the backlog. One worker (prefork ``-c 2`` by default) runs them; each task INCRs the done
counter and its result is *stored*, with a short ``result_expires`` (30 s by default), so result
keys are written and expire all through the run.
Every second a sample: the worker's RSS and PSS summed over its process tree (/proc), Redis'
``used_memory`` and the run's key count, tasks done and sent. After the last task the sampling
goes on for ``result_expires`` + 10 s, so the chart shows the results expire.

Outputs in ``bench/results/``: ``soak.csv`` (every sample), ``soak.svg`` (the chart),
``soak.json`` (the figures and the verdict), the worker's log in ``results/logs/``. The verdict
(:mod:`soak_parts.flatness`): the least-squares slope of worker RSS and of Redis ``used_memory``
against tasks done over the second half of the run, in MiB per 100,000 tasks, Redis' with its
live keys and backlog held constant, each against a limit (``--max-rss-slope``,
``--max-redis-slope``, 1 MiB per 100k tasks: about 10 bytes a task, a tenth of what one leaked
object per task would cost); the exit status is 1 when either fails. ``--replot --out NAME``
scores and draws a run again from its CSV.

Everything lives under a key prefix of the run's own on Redis db 6 (``--url``), deleted at the
end. ``used_memory`` is the whole server's: on a Redis shared with running test suites their
keys come and go in it too; ``--private-redis`` starts a ``redis-server`` of the run's own on a
Unix socket (no persistence) so that Redis' figure is the run's alone.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import procs  # noqa: E402  (bench/ is not a package)
from soak_parts import flatness, svg  # noqa: E402
from soak_parts.sampler import Sample, Sampler  # noqa: E402

RESULTS = HERE / "results"
LOG = RESULTS / "logs" / "soak-worker.log"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--max-pending", type=int, default=50_000, help="queue bound (sent - done)")
    parser.add_argument("--batch", type=int, default=5_000, help="tasks per send_many")
    parser.add_argument("--pool", default="prefork")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--result-expires", type=float, default=30.0, help="seconds")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/6")
    parser.add_argument("--private-redis", action="store_true", help="a redis-server of its own")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--tail", type=float, default=None, help="seconds sampled after the end")
    parser.add_argument("--max-rss-slope", type=float, default=1.0, help="MiB per 100k tasks")
    parser.add_argument("--max-redis-slope", type=float, default=1.0, help="MiB per 100k tasks")
    parser.add_argument("--stall", type=float, default=120.0, help="seconds without progress")
    parser.add_argument("--out", default="soak", help="name of the outputs in bench/results/")
    parser.add_argument(
        "--replot", action="store_true", help="only redraw <out>.svg from <out>.csv and .json"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A ``redis-server`` on a Unix socket in a temporary directory, for the ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="soak-redis-") as tmp:
        sock = Path(tmp) / "redis.sock"
        argv = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", ""]
        argv += ["--appendonly", "no", "--dir", tmp]
        with procs.running(argv, os.environ, Path(tmp), RESULTS / "logs" / "soak-redis.log"):
            client = redis.Redis(unix_socket_path=str(sock))
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
                    if client.ping():
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("the private redis-server did not start")
                time.sleep(0.05)
            client.close()
            yield f"unix://{sock}?db=0"


class Producer:
    """Publishes ``total`` tasks in batches, keeping ``sent - done`` under ``max_pending``."""

    def __init__(self, app: Any, client: redis.Redis, counter: str, args: argparse.Namespace):
        self.app, self.client, self.counter = app, client, counter
        self.total, self.batch, self.max_pending = args.tasks, args.batch, args.max_pending
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        calls: list[tuple[str, tuple[()], dict[str, Any]]] = [("soak.noop", (), {})] * self.batch
        try:
            while self.sent < self.total and not self._stop.is_set():
                done = int(self.client.get(self.counter) or 0)
                room = min(self.max_pending - (self.sent - done), self.total - self.sent)
                if room < min(self.batch, self.total - self.sent):
                    self._stop.wait(0.05)
                    continue
                size = min(self.batch, room)
                self.app.send_many(calls[:size])
                self.sent += size
        except BaseException as exc:  # reported by the driver, which stops the run
            self.error = exc


KEY_SHAPES = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"[0-9a-f]{16,}"), "<hex>"),
    (re.compile(r"\d+"), "<n>"),
)


def key_counts(client: redis.Redis, prefix: str) -> dict[str, int]:
    """The run's keys counted by shape (ids replaced by placeholders), most numerous first."""
    counts: Counter[str] = Counter()
    for raw in client.scan_iter(match=f"{prefix}*", count=2000):
        key = raw.decode(errors="replace")[len(prefix) :]
        for pattern, placeholder in KEY_SHAPES:
            key = pattern.sub(placeholder, key)
        counts[key] += 1
    return dict(counts.most_common())


def wait_done(producer: Producer, sampler: Sampler, proc: Any, total: int, stall: float) -> None:
    """Until the counter reaches ``total``; fails on a dead worker, a producer error or a stall."""
    last_done, last_change = -1, time.monotonic()
    while True:
        done = int(sampler.client.get(sampler.counter) or 0)
        if done >= total:
            return
        if producer.error is not None:
            raise RuntimeError(f"the producer failed: {producer.error!r}")
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}): {procs.log_tail(LOG)}")
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > stall:
            raise RuntimeError(f"no progress for {stall:.0f} s at {done:,} done")
        time.sleep(0.2)


def at(samples: list[Sample], index: int) -> dict[str, Any]:
    s = samples[index]
    keys = ("t", "done", "rss_mib", "pss_mib", "redis_used_mib", "db_keys")
    return {key: getattr(s, key) for key in keys}


def summarize(
    samples: list[Sample], args: argparse.Namespace, wall: float, keys: dict[str, Any]
) -> dict[str, Any]:
    done = [s.done for s in samples]
    first = next(i for i, s in enumerate(samples) if s.done > 0)
    # Warm-up: 10% of the tasks, and at least two result lifetimes after the first task (the
    # result keys then come and go at the same rate).
    warm_t = samples[first].t + 2 * args.result_expires
    warm = next(
        (i for i, s in enumerate(samples) if s.done >= args.tasks / 10 and s.t >= warm_t), first
    )
    end = next(i for i, s in enumerate(samples) if s.done >= args.tasks)
    sent = [s.sent for s in samples]
    keys_k = [s.db_keys / 1000 for s in samples]
    pending_k = [(s.sent - s.done) / 1000 for s in samples]

    def plain(metric: str, values: list[float], limit: float = 0.0) -> flatness.Verdict:
        return flatness.verdict(metric, done, sent, values, args.tasks, limit)

    verdicts = [
        plain("worker RSS", [s.rss_mib for s in samples], args.max_rss_slope),
        flatness.verdict(
            "Redis used_memory",
            done,
            sent,
            [s.redis_used_mib for s in samples],
            args.tasks,
            args.max_redis_slope,
            held=[keys_k, pending_k],
            note=", live keys and backlog held constant",
        ),
    ]
    informative = {
        "worker PSS": plain("worker PSS", [s.pss_mib for s in samples]).slope,
        "worker main process RSS": plain("main", [s.main_rss_mib for s in samples]).slope,
        "Redis used_memory, plain": plain("Redis", [s.redis_used_mib for s in samples]).slope,
        "keys (count, not MiB)": plain("keys", [float(s.db_keys) for s in samples]).slope,
    }
    busy = samples[end].t - samples[first].t
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tasks": args.tasks,
        "worker": f"{args.pool} -c {args.concurrency}, results stored, "
        f"result_expires={args.result_expires:g}s",
        "redis": "private redis-server (Unix socket)" if args.private_redis else args.url,
        "max_pending": args.max_pending,
        "batch": args.batch,
        "wall_s": round(wall, 1),
        "busy_s": round(busy, 1),
        "rate_per_s": round((samples[end].done - samples[first].done) / max(busy, 1e-9)),
        "start": at(samples, first),
        "after_warm_up": at(samples, warm),
        "end": at(samples, end),
        "after_tail": at(samples, len(samples) - 1),
        "max": {
            "rss_mib": max(s.rss_mib for s in samples),
            "redis_used_mib": max(s.redis_used_mib for s in samples),
            "db_keys": max(s.db_keys for s in samples),
        },
        "slopes_mib_per_100k": {v.metric: round(v.slope, 4) for v in verdicts}
        | {name: round(value, 4) for name, value in informative.items()},
        "limits": {v.metric: v.limit for v in verdicts},
        "flat": all(v.flat for v in verdicts),
        "verdicts": [v.line() for v in verdicts],
        "keys": keys,
    }


def chart(samples: list[Sample], summary: dict[str, Any]) -> str:
    times = [s.t for s in samples]
    drawing = svg.Chart(
        title=f"Soak: {summary['tasks']:,} tasks, one worker ({summary['worker']})",
        times=times,
        panels=[
            svg.Panel(
                "Worker memory, all processes",
                "MiB",
                [
                    svg.Series("RSS (summed)", "#1f77b4", [s.rss_mib for s in samples]),
                    svg.Series("PSS (summed)", "#2ca02c", [s.pss_mib for s in samples]),
                ],
            ),
            svg.Panel(
                "Redis memory",
                "MiB",
                [svg.Series("used_memory", "#d62728", [s.redis_used_mib for s in samples])],
            ),
            svg.Panel(
                "The run's keys in Redis (results, queue)",
                "thousands",
                [svg.Series("keys", "#9467bd", [s.db_keys / 1000 for s in samples])],
            ),
            svg.Panel(
                "Tasks",
                "thousands",
                [
                    svg.Series("done", "#ff7f0e", [s.done / 1000 for s in samples]),
                    svg.Series("pending", "#7f7f7f", [(s.sent - s.done) / 1000 for s in samples]),
                ],
            ),
        ],
        markers=[
            svg.Marker(summary["after_warm_up"]["t"], "warmed up"),
            svg.Marker(next(s.t for s in samples if s.done >= summary["tasks"] / 2), "second half"),
            svg.Marker(summary["end"]["t"], "all done"),
        ],
    )
    return svg.render(drawing)


def write(samples: list[Sample], summary: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / f"{name}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(samples[0].row()))
        writer.writeheader()
        writer.writerows(s.row() for s in samples)
    (RESULTS / f"{name}.svg").write_text(chart(samples, summary))
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    prefix = f"soak-{uuid.uuid4().hex[:8]}:"
    os.environ.update(
        SOAK_URL=url, SOAK_PREFIX=prefix, SOAK_RESULT_EXPIRES=str(args.result_expires)
    )
    from soak_parts import app as soak_app  # reads the environment set just above

    client = redis.Redis.from_url(url)
    counter = soak_app.COUNTER
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "celeriac", "-A", "soak_parts.app", "worker", "-P", args.pool]
    argv += ["-c", str(args.concurrency), "-l", "warning", "-n", f"{prefix.rstrip(':')}@%h"]
    keys: dict[str, Any] = {}
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_text("")
    started = time.monotonic()
    producer = Producer(soak_app.app, client, counter, args)
    try:
        with procs.running(argv, env, HERE, LOG) as proc:
            sampler = Sampler(proc.pid, client, counter, lambda: producer.sent, args.interval)
            sampler.start()
            producer.start()
            try:
                half = threading.Thread(
                    target=lambda: keys.__setitem__("at_half", wait_half(client, counter, args)),
                    daemon=True,
                )
                half.start()
                wait_done(producer, sampler, proc, args.tasks, args.stall)
                wall = time.monotonic() - started
                keys["at_end"] = key_counts(client, prefix)
                print(f"all {args.tasks:,} done after {wall:.0f} s; sampling the tail", flush=True)
                tail = args.result_expires + 10 if args.tail is None else args.tail
                time.sleep(tail)
                keys["after_tail"] = key_counts(client, prefix)
            finally:
                producer.stop()
                sampler.stop()
        return summarize(sampler.samples, args, wall, keys) | {"samples": sampler.samples}
    finally:
        stale = list(client.scan_iter(match=f"{prefix}*", count=2000))
        for start in range(0, len(stale), 10_000):
            client.delete(*stale[start : start + 10_000])
        client.close()
        soak_app.app.close()


def wait_half(client: redis.Redis, counter: str, args: argparse.Namespace) -> dict[str, int]:
    """The key shapes once half the tasks are done (a view of the steady state)."""
    while int(client.get(counter) or 0) < args.tasks / 2:
        time.sleep(0.5)
    prefix = counter[: -len("done")]
    return key_counts(client, prefix)


def replot(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Score and draw a run again from its CSV (and the JSON's wall time and key counts), after
    a change to the verdict's or the chart's code; ``args`` as the run had them."""
    with (RESULTS / f"{name}.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    kinds = {f.name: f.type for f in dataclasses.fields(Sample)}  # "int" or "float"
    values: list[dict[str, Any]] = [
        {k: (int(v) if kinds[k] == "int" else float(v)) for k, v in row.items()} for row in rows
    ]
    samples = [Sample(**row) for row in values]
    kept = json.loads((RESULTS / f"{name}.json").read_text())
    summary = summarize(samples, args, kept["wall_s"], kept["keys"])
    summary["measured_at"] = kept["measured_at"]
    write(samples, summary, name)
    return summary


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One soak, its outputs written; the summary."""
    with private_redis() if args.private_redis else contextlib.nullcontext(args.url) as url:
        result = run(args, url)
    samples = result.pop("samples")
    write(samples, result, args.out)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"soak: {args.tasks:,} tasks, {args.pool} -c {args.concurrency}, "
        f"result_expires={args.result_expires:g}s, queue <= {args.max_pending:,}",
        flush=True,
    )
    result = replot(args.out, args) if args.replot else measure(args)
    for label in ("start", "after_warm_up", "end", "after_tail"):
        point = result[label]
        print(
            f"{label:14s} t={point['t']:7.1f}s done={point['done']:>9,} "
            f"RSS={point['rss_mib']:7.1f} MiB PSS={point['pss_mib']:7.1f} MiB "
            f"Redis used={point['redis_used_mib']:7.1f} MiB keys={point['db_keys']:,}"
        )
    print(f"wall {result['wall_s']:.0f} s, {result['rate_per_s']:,} tasks/s while busy")
    for metric, value in result["slopes_mib_per_100k"].items():
        print(f"  slope per 100k tasks, {metric}: {value:+.4f}")
    for line in result["verdicts"]:
        print(line)
    print(f"outputs: {RESULTS / args.out}.{{csv,svg,json}}")
    return 0 if result["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
