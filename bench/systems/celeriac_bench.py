"""celeriac, producer side: ``.delay`` in a loop, ``app.send_many`` for bulk, ``delay().get()``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import common


def probe(_: argparse.Namespace) -> dict[str, Any]:
    """Fail early, with a readable reason, when the transport this run needs does not exist."""
    import importlib
    from importlib.metadata import version

    scheme = common.broker_url().split(":", 1)[0]
    module = {"redis": "celeriac.transports.redis", "amqp": "celeriac.transports.amqp"}[scheme]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"celeriac has no {scheme} transport yet ({exc})") from None
    if scheme == "redis":
        importlib.import_module("celeriac.results.redis")
    return {"version": version("celeriac")}


def purge(_: argparse.Namespace) -> dict[str, Any]:
    """Empty the broker queue (RabbitMQ is not flushed with the Redis db), with celeriac's CLI."""
    import subprocess
    from pathlib import Path

    cli = Path(sys.executable).with_name("celeriac")
    done = subprocess.run(
        [str(cli), "-A", "bench_celeriac_app", "purge", "-f"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"celeriac purge failed: {done.stderr.strip()[-300:]}")
    return {"output": done.stdout.strip()}


def enqueue(args: argparse.Namespace) -> dict[str, Any]:
    from bench_celeriac_app import app, noop

    noop.delay()  # connect and declare before the clock starts
    app.producer.flush()

    def send() -> None:
        for _ in range(args.n):
            noop.delay()
        app.producer.flush()  # on RabbitMQ sends are pipelined: the clock stops at the last confirm

    seconds = common.timed(send)
    app.close()
    return {"seconds": seconds, "n": args.n}


def bulk(args: argparse.Namespace) -> dict[str, Any]:
    from bench_celeriac_app import app

    name = f"bench.{args.task}"
    app.send_many([(name, (), {})])  # connect and declare untimed; the driver expects n + 1
    app.producer.flush()
    calls: list[tuple[str, tuple[()], dict[str, Any]]] = [(name, (), {})] * args.n

    def send() -> None:
        app.send_many(calls)
        app.producer.flush()  # the clock stops at the last confirm (pipelined on RabbitMQ)

    seconds = common.timed(send)
    app.close()
    return {"seconds": seconds, "n": args.n, "extra_queued": 1}


def roundtrip(args: argparse.Namespace) -> dict[str, Any]:
    from bench_celeriac_app import app, ping

    summary = common.roundtrips(lambda: ping.delay().get(timeout=args.timeout), args.n, args.warmup)
    app.close()
    return summary


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
