"""What one broker node sustains: several producer and worker processes push a no-op task
through one Redis and one RabbitMQ, and every process's CPU is read while they do.

``make bench-capacity`` (celeriac's own venv; about three minutes). For each broker and each
step k of ``--steps`` (default 1, 2, 3), k producer processes (``.delay()`` loops, or
``send_many`` batches with ``--mode bulk``) and k workers (``-P threads -c 2`` by default)
run; after a warm-up, a window of ``--seconds`` is measured:

* tasks/s done: what the producers sent in the window, less the growth of the queue (read with
  the transport's own ``size``); the tasks leased out at either end, a few dozen, are the error;
* CPU per task of the broker (Redis ``INFO cpu``; RabbitMQ's Erlang VM from /proc), of the
  workers (each one's process tree) and of the producers, and the machine's busy cores
  (/proc/stat), which tell who saturates first.

On a machine where the clients and the broker share a few cores the clients saturate first
(a Python task costs its worker several times what it costs the broker), so the broker's
ceiling is read from its CPU per task: one core of it sustains 1e6 / (broker us per task)
tasks/s (Redis runs commands on one core; a RabbitMQ queue is one Erlang process, so about one
core per queue as well). The summary says that, per broker and mode, with the fleet that a
million tasks a minute (16,667/s) needs.

Outputs: the table on stdout and ``bench/results/capacity.{md,json}``; the workers' logs in
``bench/results/logs/``. The Redis side runs on db 12 under a key prefix of its own, the AMQP
side on a queue of its own; both are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from capacity_parts.app import make_app  # noqa: E402
from harness import cpu, procs  # noqa: E402  (bench/ is not a package)

RESULTS = HERE / "results"
METER_URL = "redis://127.0.0.1:6379/12"
BROKERS = {"redis": METER_URL, "amqp": "amqp://guest:guest@127.0.0.1:5672//"}
MILLION_A_MINUTE = 1_000_000 / 60


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="redis,amqp", help="comma-separated: redis, amqp")
    parser.add_argument("--steps", default="1,2,3", help="producers = workers at each step")
    parser.add_argument("--mode", choices=("delay", "bulk"), default="delay")
    parser.add_argument("--batch", type=int, default=200, help="tasks per send (bulk) or count")
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--seconds", type=float, default=8.0, help="the measured window")
    parser.add_argument("--max-waiting", type=int, default=20_000, help="backlog bound")
    parser.add_argument("--out", default="capacity", help="name of the outputs in results/")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


@dataclass
class Step:
    """One measured window: k producers and k workers on one broker."""

    broker: str
    mode: str
    k: int
    seconds: float
    done: int
    per_s: float
    broker_cpu_pct: float
    broker_us: float
    worker_us: float
    producer_us: float
    redis_us: float
    machine_busy_cores: float


def machine_busy_seconds() -> float:
    """Every core's non-idle time since boot, from /proc/stat's first line (seconds)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / procs.CLOCK_TICKS


def tree_cpu(pids: list[int]) -> float:
    return sum(procs.cpu_seconds(pid) for pid in pids)


class Fleet:
    """The processes of one step, started in the run's environment and always stopped."""

    def __init__(self, env: dict[str, str], args: argparse.Namespace, tag: str) -> None:
        self.logs_dir = args.results_dir / "logs"
        self.env, self.args, self.tag = env, args, tag
        self.workers: list[subprocess.Popen[bytes]] = []
        self.producers: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def _start(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log_path = self.logs_dir / f"capacity-{self.tag}-{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
        self._logs.append(log)
        return procs.start(argv, self.env, HERE, log)

    def start_workers(self, k: int) -> None:
        cli = str(Path(sys.executable).with_name("celeriac"))
        for index in range(k):
            argv = [cli, "-A", "capacity_parts.app", "worker", "-l", "warning", "-P"]
            argv += [self.args.pool, "-c", str(self.args.concurrency), "-n", f"cap{index}@%h"]
            self.workers.append(self._start(argv, f"worker{index}"))

    def start_producers(self, k: int) -> None:
        for index in range(k):
            argv = [sys.executable, "-m", "capacity_parts.produce", self.args.mode]
            argv += [str(self.args.batch), METER_URL]
            self.producers.append(self._start(argv, f"producer{index}"))

    def check(self) -> None:
        for proc in self.workers + self.producers:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"a process of the run exited ({proc.returncode}): {proc.args!r}"
                )

    def stop(self) -> None:
        for proc in self.producers + self.workers:
            procs.stop(proc, grace=10.0)
        for log in self._logs:
            log.close()


class Queue:
    """The step's queue, read and removed through one connected transport of the app's (one
    connection for the whole step: a new one per sample would charge the broker for it)."""

    def __init__(self, app: Any, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.transport = app.create_transport()
        self.loop.run_until_complete(self.transport.connect())

    def size(self) -> int:
        return int(self.loop.run_until_complete(self.transport.size(self.name)))

    def declared(self) -> bool:
        """On RabbitMQ the workers declare the queue: until then ``size`` fails."""
        try:
            self.size()
        except Exception:
            return False
        return True

    def delete(self) -> None:
        async def delete() -> None:
            await self.transport.purge(self.name)
            await self.transport.delete_queue(self.name)

        try:
            self.loop.run_until_complete(delete())
        finally:
            self.loop.run_until_complete(self.transport.close())
            self.loop.close()


def run_step(broker: str, k: int, args: argparse.Namespace, meter: redis.Redis) -> Step:
    """Start k workers and k producers on ``broker``, measure one window, stop them all."""
    tag = f"{broker}-{uuid.uuid4().hex[:8]}"
    prefix, queue = f"capacity-{tag}:", f"capacity-{tag}"
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE),
        "CAPACITY_BROKER": BROKERS[broker],
        "CAPACITY_PREFIX": prefix,
        "CAPACITY_QUEUE": queue,
    }
    env.pop("VIRTUAL_ENV", None)
    app = make_app(BROKERS[broker], prefix, queue)

    sent_key, pause_key = f"{prefix}sent", f"{prefix}pause"
    meters = cpu.Meter(meter, broker)
    fleet = Fleet(env, args, tag)
    waiting = Queue(app, queue)
    try:
        fleet.start_workers(k)
        deadline = time.monotonic() + 60

        def until(what: str, ready: Any) -> None:
            while not ready():
                fleet.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what}: not in 60 s")
                time.sleep(0.1)

        until("the queue declared", waiting.declared)
        app.send_task("capacity.noop")  # taken from the queue: the workers consume
        until("the first task taken", lambda: waiting.size() == 0)
        fleet.start_producers(k)
        workers = [p.pid for p in fleet.workers]
        producers = [p.pid for p in fleet.producers]

        def sample() -> tuple[float, int, int, cpu.Sample, float, float, float]:
            backlog = waiting.size()
            if backlog > args.max_waiting:
                meter.set(pause_key, 1)
            else:
                meter.delete(pause_key)
            return (
                time.monotonic(),
                int(meter.get(sent_key) or 0),
                backlog,
                meters.sample(),
                tree_cpu(workers),
                tree_cpu(producers),
                machine_busy_seconds(),
            )

        warm_until = time.monotonic() + args.warmup
        while time.monotonic() < warm_until:
            fleet.check()
            sample()
            time.sleep(0.2)
        first = sample()
        end = first[0] + args.seconds
        while time.monotonic() < end:
            fleet.check()
            last = sample()
            time.sleep(0.2)
        last = sample()
        t0, sent0, wait0, cpu0, work0, prod0, busy0 = first
        t1, sent1, wait1, cpu1, work1, prod1, busy1 = last
        seconds = t1 - t0
        done = (sent1 - sent0) - (wait1 - wait0)
        if done <= 0:
            raise RuntimeError(f"nothing done in the window (sent {sent1 - sent0})")
        per_task = meters.per_task(cpu0, cpu1, done)
        return Step(
            broker=broker,
            mode=args.mode,
            k=k,
            seconds=seconds,
            done=done,
            per_s=done / seconds,
            broker_cpu_pct=per_task["broker_cpu_us"] * done / seconds / 1e4,
            broker_us=per_task["broker_cpu_us"],
            worker_us=(work1 - work0) * 1e6 / done,
            producer_us=(prod1 - prod0) * 1e6 / done,
            redis_us=per_task["redis_cpu_us"],
            machine_busy_cores=(busy1 - busy0) / seconds,
        )
    finally:
        fleet.stop()
        with contextlib.suppress(Exception):
            waiting.delete()
        app.close()
        for key in meter.scan_iter(f"{prefix}*", count=1000):
            meter.delete(key)


def fleet_for(rate: float, us_per_task: float) -> int:
    """Cores needed for ``rate`` tasks/s at ``us_per_task`` CPU each (rounded up)."""
    return max(1, math.ceil(rate * us_per_task / 1e6))


def summary(steps: list[Step]) -> list[str]:
    """Per broker: its ceiling per core and the fleet a million tasks a minute needs, from the
    largest step's CPU per task (the most loaded window, where batching helps most)."""
    lines = []
    for broker in dict.fromkeys(s.broker for s in steps):
        top = max((s for s in steps if s.broker == broker), key=lambda s: s.k)
        per_broker_core = 1e6 / top.broker_us if top.broker_us > 0 else float("inf")
        per_worker_core = 1e6 / top.worker_us
        lines.append(
            f"- {broker} ({top.mode}, {top.k} producers and {top.k} workers): "
            f"{top.per_s:,.0f} tasks/s with the broker at {top.broker_cpu_pct:.0f}% of a core "
            f"and the machine at {top.machine_busy_cores:.2f} busy cores; "
            f"broker {top.broker_us:.1f} us/task -> {per_broker_core:,.0f} tasks/s per broker "
            f"core; worker {top.worker_us:.0f} us/task -> {per_worker_core:,.0f} tasks/s per "
            f"worker core; producer {top.producer_us:.0f} us/task. A million tasks a minute "
            f"({MILLION_A_MINUTE:,.0f}/s): {fleet_for(MILLION_A_MINUTE, top.worker_us)} worker "
            f"cores, {fleet_for(MILLION_A_MINUTE, top.producer_us)} producer cores, "
            f"{fleet_for(MILLION_A_MINUTE, top.broker_us)} broker core(s)."
        )
    return lines


def table(steps: list[Step]) -> list[str]:
    head = (
        "| broker | mode | producers = workers | tasks/s | broker CPU (% of a core) "
        "| broker us/task | worker us/task | producer us/task | Redis us/task | busy cores |"
    )
    lines = [head, "|" + " --- |" * 10]
    for s in steps:
        lines.append(
            f"| {s.broker} | {s.mode} | {s.k} | {s.per_s:,.0f} | {s.broker_cpu_pct:.0f} "
            f"| {s.broker_us:.1f} | {s.worker_us:.0f} | {s.producer_us:.0f} | {s.redis_us:.1f} "
            f"| {s.machine_busy_cores:.2f} |"
        )
    return lines


@contextlib.contextmanager
def stopped_on_exit() -> Iterator[None]:
    try:
        yield
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    brokers = [b for b in args.brokers.split(",") if b]
    unknown = set(brokers) - set(BROKERS)
    if unknown:
        raise SystemExit(f"--brokers: unknown {', '.join(sorted(unknown))} (redis, amqp)")
    ks = [int(v) for v in args.steps.split(",")]
    meter = redis.Redis.from_url(METER_URL)
    steps: list[Step] = []
    with stopped_on_exit():
        for broker in brokers:
            for k in ks:
                step = run_step(broker, k, args, meter)
                steps.append(step)
                print(table([step])[-1], flush=True)
    nproc = os.cpu_count()
    lines = [
        f"Capacity run of {datetime.now(UTC).isoformat(timespec='seconds')}: "
        f"`python bench/capacity.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        "",
        f"nproc {nproc}; window {args.seconds:g} s after {args.warmup:g} s of warm-up; workers "
        f"-P {args.pool} -c {args.concurrency}; no-op task, results ignored; backlog bound "
        f"{args.max_waiting:,}.",
        "",
        *table(steps),
        "",
        *summary(steps),
    ]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    (args.results_dir / f"{args.out}.json").write_text(
        json.dumps({"args": vars(args), "steps": [asdict(s) for s in steps]}, indent=2, default=str)
        + "\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
