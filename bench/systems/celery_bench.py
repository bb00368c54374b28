"""Celery, producer side: ``.delay`` in a loop, a ``group`` for bulk, ``delay().get()``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import common


def probe(_: argparse.Namespace) -> dict[str, Any]:
    import celery
    import kombu

    return {"version": f"celery {celery.__version__}, kombu {kombu.__version__}"}


def purge(_: argparse.Namespace) -> dict[str, Any]:
    """Empty the broker queue (RabbitMQ is not flushed with the Redis db)."""
    from bench_celery_app import app

    return {"purged": app.control.purge()}


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    from bench_celery_app import noop

    noop.delay()  # connect and declare before the clock starts
    seconds = common.timed(lambda: [noop.delay() for _ in range(args.n)])
    return {"seconds": seconds, "n": args.n}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    from bench_celery_app import app
    from celery import group

    task = app.tasks[f"bench.{args.task}"]
    task.delay()  # untimed warm-up; the driver expects n + 1
    seconds = common.timed(lambda: group(task.s() for _ in range(args.n)).apply_async())
    return {"seconds": seconds, "n": args.n, "extra_queued": 1}


def roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    from bench_celery_app import ping

    return common.roundtrips(lambda: ping.delay().get(timeout=args.timeout), args.n, args.warmup)


if __name__ == "__main__":
    sys.exit(
        common.run(
            {
                "probe": probe,
                "purge": purge,
                "enqueue": enqueue,
                "bulk": bulk,
                "roundtrip": roundtrip,
            }
        )
    )
