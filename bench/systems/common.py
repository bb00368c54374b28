"""What every adapter and task module shares. Runs inside each peer's own venv (Python 3.11+,
the standard library and redis-py only), so it imports nothing from celeriac or the driver.

The contract with the driver is deliberately thin: the driver passes the Redis URL (counter,
result backend, and broker unless ``BENCH_BROKER_URL`` says otherwise) in the environment, runs
``python <adapter> <command> --n N``, and reads exactly one line starting with ``BENCH-RESULT``
from stdout. Libraries may print what they like around it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import redis

COUNTER = "bench:counter"
"""The key every task INCRs: the driver's only proof that a task ran."""
IO_SLEEP = 0.010
"""Seconds each io task sleeps: a stand-in for a network call."""
RESULT_MARK = "BENCH-RESULT "
COMMANDS = ("probe", "purge", "enqueue", "bulk", "roundtrip")


def redis_url() -> str:
    """The per-system Redis database (counter and results; the broker too unless overridden)."""
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def broker_url() -> str:
    """The broker URL: the system's Redis db, or RabbitMQ for the AMQP comparison."""
    return os.environ.get("BENCH_BROKER_URL") or redis_url()


_client: redis.Redis | None = None
_client_pid = 0


def counter() -> redis.Redis:
    """A process-wide sync client, rebuilt after a fork (prefork children inherit the module)."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(redis_url())
        _client_pid = os.getpid()
    return _client


def incr() -> int:
    """The body of every benchmark task: one round trip, so that drain is verified, not guessed."""
    return int(counter().incr(COUNTER))


def count() -> int:
    return int(counter().get(COUNTER) or 0)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One benchmark workload, producer side.")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--task", choices=("noop", "io"), default="noop")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=30.0, help="per result, roundtrip only")
    return parser.parse_args(argv)


def emit(**fields: Any) -> None:
    """The one line the driver reads."""
    sys.stdout.write(RESULT_MARK + json.dumps(fields) + "\n")
    sys.stdout.flush()


_measured_cpu = 0.0
"""CPU seconds (all threads) this process spent inside :func:`measured` sections."""


@contextlib.contextmanager
def measured() -> Iterator[None]:
    """Count the process's CPU time over the block as the producer's cost of the workload.

    Only the timed section counts, never the interpreter's start or the first connection:
    :func:`run` reports the sum as ``producer_cpu_s``, which the driver divides by the tasks.
    """
    global _measured_cpu
    before = time.process_time()
    try:
        yield
    finally:
        _measured_cpu += time.process_time() - before


def timed(fn: Callable[[], object]) -> float:
    with measured():
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """Percentiles in ms by the nearest-rank rule (no interpolation between two samples)."""
    ordered = sorted(samples)

    def rank(p: float) -> float:
        index = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    return {
        "p50_ms": rank(50),
        "p90_ms": rank(90),
        "p99_ms": rank(99),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
    }


def roundtrips(call: Callable[[], object], n: int, warmup: int) -> dict[str, float]:
    """``warmup`` untimed calls (the worker may still be starting), then ``n`` timed ones."""
    for _ in range(warmup):
        call()
    samples = []
    with measured():
        for _ in range(n):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
    return latency_summary(samples)


async def aroundtrips(
    call: Callable[[], Awaitable[object]], n: int, warmup: int
) -> dict[str, float]:
    """:func:`roundtrips` for the async-only producers (arq, Taskiq)."""
    for _ in range(warmup):
        await call()
    samples = []
    with measured():
        for _ in range(n):
            started = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - started)
    return latency_summary(samples)


def run(handlers: dict[str, Callable[[argparse.Namespace], dict[str, Any]]]) -> int:
    """Dispatch one command; an exception becomes an ``error`` field, never a silent exit."""
    args = parse()
    try:
        fields = handlers[args.command](args)
    except Exception as exc:
        emit(ok=False, error=f"{type(exc).__name__}: {exc}")
        return 1
    if _measured_cpu:
        fields.setdefault("producer_cpu_s", _measured_cpu)
    emit(ok=True, **fields)
    return 0
