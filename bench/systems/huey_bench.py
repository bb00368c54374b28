"""Huey, producer side: calling the task in a loop (Huey's ``.delay``), ``Task.map`` for bulk (a
loop of enqueues: Huey has no bulk API), ``ping()(blocking=True)`` for the round trip.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import common


def probe(_: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {"version": f"huey {version('huey')}"}


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    from bench_huey_app import noop

    noop()  # connect before the clock starts
    seconds = common.timed(lambda: [noop() for _ in range(args.n)])
    return {"seconds": seconds, "n": args.n}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    from bench_huey_app import io, noop

    task = io if args.task == "io" else noop
    task()  # untimed warm-up; the driver expects n + 1
    seconds = common.timed(lambda: task.map([()] * args.n))
    return {"seconds": seconds, "n": args.n, "extra_queued": 1}


def roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    from bench_huey_app import ping

    return common.roundtrips(
        lambda: ping().get(blocking=True, timeout=args.timeout), args.n, args.warmup
    )


if __name__ == "__main__":
    sys.exit(common.run({"probe": probe, "enqueue": enqueue, "bulk": bulk, "roundtrip": roundtrip}))
