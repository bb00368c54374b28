"""arq, producer side. arq's producer is async-only: ``await pool.enqueue_job(...)`` awaited one
after the other for enqueue, ``asyncio.gather`` of them (100 in flight, arq has no bulk API) for
bulk, ``await (await enqueue_job("ping")).result(poll_delay=0.005)`` for the round trip.
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

    return {"version": f"arq {version('arq')}"}


async def _pool() -> Any:
    from arq import create_pool
    from bench_arq_app import settings

    return await create_pool(settings())


async def _enqueue(n: int) -> float:
    pool = await _pool()
    await pool.enqueue_job("noop")  # connect before the clock starts
    with common.measured():
        started = time.perf_counter()
        for _ in range(n):
            await pool.enqueue_job("noop")
        seconds = time.perf_counter() - started
    await pool.aclose()
    return seconds


async def _bulk(n: int, task: str) -> float:
    pool = await _pool()
    await pool.enqueue_job(task)  # untimed warm-up; the driver expects n + 1
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with gate:
            await pool.enqueue_job(task)

    with common.measured():
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        seconds = time.perf_counter() - started
    await pool.aclose()
    return seconds


async def _roundtrip(n: int, warmup: int, timeout: float) -> dict[str, float]:
    pool = await _pool()

    async def call() -> None:
        job = await pool.enqueue_job("ping")
        await job.result(timeout=timeout, poll_delay=0.005)

    summary = await common.aroundtrips(call, n, warmup)
    await pool.aclose()
    return summary


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    return {"seconds": asyncio.run(_enqueue(args.n)), "n": args.n}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    return {"seconds": asyncio.run(_bulk(args.n, args.task)), "n": args.n, "extra_queued": 1}


def roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_roundtrip(args.n, args.warmup, args.timeout))


if __name__ == "__main__":
    sys.exit(common.run({"probe": probe, "enqueue": enqueue, "bulk": bulk, "roundtrip": roundtrip}))
