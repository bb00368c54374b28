"""Dramatiq, producer side: ``.send()`` in a loop, a ``group(...).run()`` for bulk (Dramatiq has
no bulk enqueue: each message is its own enqueue script call), ``send().get_result(block=True)``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import common


def probe(_: argparse.Namespace) -> dict[str, Any]:
    import dramatiq

    return {"version": f"dramatiq {dramatiq.__version__}"}


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    from bench_dramatiq_app import noop

    noop.send()  # connect before the clock starts
    seconds = common.timed(lambda: [noop.send() for _ in range(args.n)])
    return {"seconds": seconds, "n": args.n}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    from bench_dramatiq_app import io, noop
    from dramatiq import group

    actor = io if args.task == "io" else noop
    actor.send()  # untimed warm-up; the driver expects n + 1
    seconds = common.timed(lambda: group(actor.message() for _ in range(args.n)).run())
    return {"seconds": seconds, "n": args.n, "extra_queued": 1}


def roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    from bench_dramatiq_app import ping

    timeout_ms = int(args.timeout * 1000)
    return common.roundtrips(
        lambda: ping.send().get_result(block=True, timeout=timeout_ms), args.n, args.warmup
    )


if __name__ == "__main__":
    sys.exit(common.run({"probe": probe, "enqueue": enqueue, "bulk": bulk, "roundtrip": roundtrip}))
