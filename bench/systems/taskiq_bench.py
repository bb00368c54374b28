"""Taskiq, producer side. Taskiq's producer is async-only: ``await task.kiq()`` one after the
other for enqueue, ``asyncio.gather`` of them (100 in flight; no bulk API) for bulk,
``await (await ping.kiq()).wait_result(check_interval=0.005)`` (it polls) for the round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import common

IN_FLIGHT = 100


def probe(_: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {"version": f"taskiq {version('taskiq')}, taskiq-redis {version('taskiq-redis')}"}


async def _enqueue(n: int) -> float:
    from bench_taskiq_app import broker, noop

    await broker.startup()
    await noop.kiq()  # connect before the clock starts
    with common.measured():
        started = time.perf_counter()
        for _ in range(n):
            await noop.kiq()
        seconds = time.perf_counter() - started
    await broker.shutdown()
    return seconds


async def _bulk(n: int, name: str) -> float:
    import bench_taskiq_app

    task = getattr(bench_taskiq_app, name)
    await bench_taskiq_app.broker.startup()
    await task.kiq()  # untimed warm-up; the driver expects n + 1
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with gate:
            await task.kiq()

    with common.measured():
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        seconds = time.perf_counter() - started
    await bench_taskiq_app.broker.shutdown()
    return seconds


async def _roundtrip(n: int, warmup: int, timeout: float) -> dict[str, float]:
    from bench_taskiq_app import broker, ping

    await broker.startup()

    async def call() -> None:
        task = await ping.kiq()
        result = await task.wait_result(check_interval=0.005, timeout=timeout)
        if result.is_err:
            raise RuntimeError(f"ping failed: {result.error}")

    summary = await common.aroundtrips(call, n, warmup)
    await broker.shutdown()
    return summary


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    return {"seconds": asyncio.run(_enqueue(args.n)), "n": args.n}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    return {"seconds": asyncio.run(_bulk(args.n, args.task)), "n": args.n, "extra_queued": 1}


def roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_roundtrip(args.n, args.warmup, args.timeout))


if __name__ == "__main__":
    sys.exit(common.run({"probe": probe, "enqueue": enqueue, "bulk": bulk, "roundtrip": roundtrip}))
