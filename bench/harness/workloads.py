"""One run of every workload for one system, in a fixed order, each step bounded in time.

Order of a run (the Redis db is flushed between steps, so each starts from nothing):

1. enqueue: the adapter sends N no-op tasks one by one (no worker running);
2. bulk: the adapter sends N no-op tasks at once; they stay queued for
3. drain: the worker starts; the clock runs from its start until the counter that the tasks
   INCR reaches what was queued. Also kept: the rate from the first finished task on (``steady``,
   start-up left out), the worker's RSS after the drain, and its idle CPU over the next seconds;
4. roundtrip: on the same, now warm, worker, sequential ``delay`` + ``get``;
5. io: N sleeping tasks are queued, a worker with I/O concurrency 100 starts, and the rate is
   taken from the first finished task to the last (start-up left out: at 100 at a time, N tasks
   of 10 ms are far shorter than any worker's start).

A failing step records its error and the run goes on with the next one that can still run.

Beside the rates, each step records CPU per task (see :mod:`harness.cpu`): the producer's for
enqueue and bulk, the worker's (all its processes) for drain, io and roundtrip, and the broker's
for every step. Drain and io take theirs from the first task done to the last, so that the
worker's start-up (imports, connections) is not charged to the tasks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from harness import cpu, procs
from harness.systems import AMQP, System

SYSTEMS_DIR = Path(__file__).resolve().parent.parent / "systems"
COUNTER = "bench:counter"
POLL = 0.002
ROUNDTRIP_WARMUP = 20
"""Untimed round trips before the timed ones (the adapters' default, passed explicitly so that
the CPU per call can be divided by every call made)."""


@dataclass(frozen=True)
class Sizes:
    """How much each workload does; ``--quick`` swaps in a small set."""

    enqueue: int = 3000
    drain: int = 10000
    io: int = 2000
    roundtrip: int = 500
    idle_seconds: float = 10.0
    repeats: int = 3
    drain_cap: float = 12.0
    io_cap: float = 8.0
    step_timeout: float = 180.0


QUICK = Sizes(enqueue=200, drain=300, io=200, roundtrip=50, idle_seconds=1.0, repeats=1,
              drain_cap=20.0, io_cap=20.0, step_timeout=60.0)  # fmt: skip


@dataclass
class Context:
    """What a run needs to know about where it runs."""

    system: System
    python: Path
    redis_base: str
    db: int
    sizes: Sizes
    log_dir: Path
    run_index: int = 0

    @property
    def redis_url(self) -> str:
        return f"{self.redis_base}/{self.db}"

    @property
    def bin(self) -> str:
        # not resolved: a venv's python is a symlink, and its scripts live beside the link
        return str(Path(os.path.abspath(self.python)).parent)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(SYSTEMS_DIR),
            "PYTHONUNBUFFERED": "1",
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_BROKER_URL": AMQP if self.system.broker == "amqp" else self.redis_url,
        }
        env.pop("VIRTUAL_ENV", None)
        return env

    def argv(self, template: tuple[str, ...]) -> list[str]:
        return [part.format(bin=self.bin, redis=self.redis_url) for part in template]

    def adapter(self, command: str, timeout: float | None = None, **options: Any) -> dict[str, Any]:
        argv = [str(self.python), str(SYSTEMS_DIR / self.system.adapter), command]
        for key, value in options.items():
            argv += [f"--{key}", str(value)]
        return procs.run_adapter(argv, self.env(), SYSTEMS_DIR, timeout or self.sizes.step_timeout)

    def log(self, what: str) -> Path:
        return self.log_dir / f"{self.system.name}-run{self.run_index}-{what}.log"


def client(ctx: Context) -> redis.Redis:
    return redis.Redis.from_url(ctx.redis_url)


def reset(ctx: Context) -> None:
    """FLUSHDB of this system's db only (and a purge of its RabbitMQ queue on AMQP)."""
    client(ctx).flushdb()
    if ctx.system.broker == "amqp":
        ctx.adapter("purge", timeout=60)


@dataclass
class Progress:
    """When the counter was first seen above zero, and when it reached ``target``: the number
    queued, or, when ``capped``, the number done by the time cap (the rates are then over those).
    """

    started: float
    first_at: float
    first_count: int
    done_at: float
    target: int
    capped: bool = False
    first_cpu: cpu.Sample | None = None
    cpu_count: int = 0
    """The count read just after ``first_cpu`` was taken: CPU per task is over the tasks
    finished from there to ``done_cpu``."""
    done_cpu: cpu.Sample | None = None

    @property
    def from_start(self) -> float:
        return self.target / (self.done_at - self.started)

    @property
    def steady(self) -> float:
        return (self.target - self.first_count) / max(self.done_at - self.first_at, 1e-9)


def wait_for_count(
    ctx: Context,
    target: int,
    started: float,
    cap: float,
    alive: Callable[[], bool],
    log: Path,
    meter: cpu.Meter | None = None,
) -> Progress:
    """Poll the counter until ``target``, or until ``cap`` seconds have passed: a slow system
    is then measured over what it did by the cap, which keeps the whole run bounded. Fails fast
    if the worker dies, or if nothing at all was done by the cap. With a ``meter``, CPU is
    sampled when the first task is seen done and at the end (the counter is read again after
    the first sample, so that tasks finished while it was taken are not charged to it)."""
    r = client(ctx)
    first_at, first_count = 0.0, 0
    first_cpu: cpu.Sample | None = None
    cpu_count = 0
    while True:
        now = time.perf_counter()
        seen = int(r.get(COUNTER) or 0)
        if seen and not first_at:
            first_at, first_count = now, seen
            if meter is not None:
                first_cpu = meter.sample()
                cpu_count = seen = int(r.get(COUNTER) or 0)
        if seen >= target:
            done = meter.sample() if meter is not None else None
            return Progress(
                started, first_at, first_count, now, target, False, first_cpu, cpu_count, done
            )
        if not alive():
            raise RuntimeError(f"worker exited at {seen}/{target}: {procs.log_tail(log)}")
        if now - started > cap:
            if seen > first_count:
                done = meter.sample() if meter is not None else None
                return Progress(
                    started, first_at, first_count, now, seen, True, first_cpu, cpu_count, done
                )
            raise RuntimeError(f"{seen}/{target} done after {cap:.0f}s: {procs.log_tail(log)}")
        time.sleep(POLL)


def _step(record: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> bool:
    """Run one step; its figures or its error go into ``record[name]``, with its wall time."""
    began = time.monotonic()
    try:
        record[name] = fn()
    except Exception as exc:
        record[name] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
    record[name]["elapsed_s"] = round(time.monotonic() - began, 2)
    return "error" not in record[name]


def _cpu_fields(meter: cpu.Meter, got: Progress) -> dict[str, float]:
    if got.first_cpu is None or got.done_cpu is None:
        return {}
    return meter.per_task(got.first_cpu, got.done_cpu, got.target - got.cpu_count)


def _producer(ctx: Context, command: str, **options: Any) -> dict[str, Any]:
    """One producer-side adapter run, with its rate, its own CPU per task and the broker's."""
    meter = cpu.Meter(client(ctx), ctx.system.broker)
    before = meter.sample()
    got = ctx.adapter(command, **options)
    fields = {"per_s": got["n"] / got["seconds"], **got}
    fields.update(meter.per_task(before, meter.sample(), got["n"]))
    if "producer_cpu_s" in got:
        fields["producer_cpu_us"] = got["producer_cpu_s"] * 1e6 / got["n"]
    return fields


def enqueue(ctx: Context) -> dict[str, Any]:
    reset(ctx)
    return _producer(ctx, "enqueue", n=ctx.sizes.enqueue)


def run_once(ctx: Context) -> dict[str, Any]:
    """Every workload once; returns the raw figures of this run."""
    record: dict[str, Any] = {}
    _step(record, "enqueue", lambda: enqueue(ctx))
    try:
        reset(ctx)
    except Exception as exc:
        record["drain"] = {"error": f"reset failed: {exc}"}
        return record
    bulk_ok = _step(record, "bulk", lambda: _bulk(ctx, "noop", ctx.sizes.drain))
    if bulk_ok:
        try:
            _drain_idle_roundtrip(ctx, record, ctx.sizes.drain + record["bulk"]["extra_queued"])
        except Exception as exc:  # the worker could not even start
            record.setdefault("drain", {"error": f"{type(exc).__name__}: {exc}"})
    else:
        record["drain"] = {"error": "nothing queued: bulk failed"}
    _step(record, "io", lambda: _io(ctx))
    return record


def _bulk(ctx: Context, task: str, n: int) -> dict[str, Any]:
    return _producer(ctx, "bulk", n=n, task=task)


def _drain_idle_roundtrip(ctx: Context, record: dict[str, Any], target: int) -> None:
    log = ctx.log("worker")
    with procs.running(ctx.argv(ctx.system.worker), ctx.env(), SYSTEMS_DIR, log) as worker:
        started = time.perf_counter()
        meter = cpu.Meter(client(ctx), ctx.system.broker, worker.pid)

        def alive() -> bool:
            return worker.poll() is None

        def drain() -> dict[str, Any]:
            got = wait_for_count(ctx, target, started, ctx.sizes.drain_cap, alive, log, meter)
            rss = procs.rss_bytes(worker.pid)
            if got.capped:
                client(ctx).flushdb()  # empty the backlog under the worker, for the idle window
            return {
                "per_s": got.from_start,
                "steady_per_s": got.steady,
                "seconds": got.done_at - got.started,
                "n": got.target,
                "queued": target,
                "capped": got.capped,
                "rss_mb": rss / 2**20,
                **_cpu_fields(meter, got),
            }

        if not _step(record, "drain", drain):
            return
        time.sleep(0.5)  # let the last acks and result writes settle

        def idle() -> dict[str, Any]:
            used = procs.idle_cpu_percent(worker.pid, ctx.sizes.idle_seconds)
            if not alive():
                raise RuntimeError(f"worker exited while idle: {procs.log_tail(log)}")
            return {"cpu_pct": used}

        _step(record, "idle", idle)

        def roundtrip() -> dict[str, Any]:
            """The worker's and the broker's CPU over the whole adapter run, divided by every
            call it made (the warm-up's included); the producer's over the timed calls only."""
            before = meter.sample()
            got = ctx.adapter("roundtrip", n=ctx.sizes.roundtrip, warmup=ROUNDTRIP_WARMUP)
            calls = ctx.sizes.roundtrip + ROUNDTRIP_WARMUP
            got.update(meter.per_task(before, meter.sample(), calls))
            if "producer_cpu_s" in got:
                got["producer_cpu_us"] = got["producer_cpu_s"] * 1e6 / ctx.sizes.roundtrip
            return got

        _step(record, "roundtrip", roundtrip)


def _io(ctx: Context) -> dict[str, Any]:
    reset(ctx)
    queued = _bulk(ctx, "io", ctx.sizes.io)
    target = ctx.sizes.io + queued["extra_queued"]
    log = ctx.log("io-worker")
    with procs.running(ctx.argv(ctx.system.io_worker), ctx.env(), SYSTEMS_DIR, log) as worker:
        started = time.perf_counter()
        meter = cpu.Meter(client(ctx), ctx.system.broker, worker.pid)
        got = wait_for_count(
            ctx, target, started, ctx.sizes.io_cap, lambda: worker.poll() is None, log, meter
        )
    return {
        "per_s": got.steady,
        "from_start_per_s": got.from_start,
        "n": got.target,
        "queued": target,
        "capped": got.capped,
        **_cpu_fields(meter, got),
    }
