"""RQ, producer side: ``queue.enqueue`` in a loop, ``queue.enqueue_many`` (one pipeline) for bulk,
``enqueue(ping).latest_result(timeout=...)`` (a blocking XREAD) for the round trip.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import common


def probe(_: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {"version": f"rq {version('rq')}"}


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    from bench_rq_app import noop, queue

    q = queue()
    q.enqueue(noop, result_ttl=0)  # connect before the clock starts
    seconds = common.timed(lambda: [q.enqueue(noop, result_ttl=0) for _ in range(args.n)])
    return {"seconds": seconds, "n": args.n}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    from bench_rq_app import io, noop, queue
    from rq import Queue

    fn = io if args.task == "io" else noop
    q = queue()
    q.enqueue(fn, result_ttl=0)  # untimed warm-up; the driver expects n + 1

    def send() -> None:
        q.enqueue_many([Queue.prepare_data(fn, result_ttl=0) for _ in range(args.n)])

    return {"seconds": common.timed(send), "n": args.n, "extra_queued": 1}


def roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    from bench_rq_app import ping, queue

    q = queue()
    timeout = max(1, int(args.timeout))

    def call() -> None:
        result = q.enqueue(ping).latest_result(timeout=timeout)
        if result is None:
            raise TimeoutError("no RQ result in time")

    return common.roundtrips(call, args.n, args.warmup)


if __name__ == "__main__":
    sys.exit(common.run({"probe": probe, "enqueue": enqueue, "bulk": bulk, "roundtrip": roundtrip}))
