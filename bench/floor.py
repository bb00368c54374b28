"""The floor of the drain workload on this machine: what every drained task costs with no task
queue around it, to tell what a worker could reach at best.

(a) two processes, each INCR the counter in a loop: the benchmark's task body alone;
(b) two processes, each: claim 8 messages with celeriac's own claim script (what a worker with
    prefetch 8 holds), INCR once per message, ack the 8 with the settle script: the broker's
    part of a drain plus the task body, with no decoding, no pool and no result bookkeeping;
(c) two processes, each a loop over celeriac's own code with no parent: the async transport's
    ``get`` of k messages, decoding and ``build_request``, ``execute`` and ``finish``, then one
    ``ack`` of the k; for k = 1, 2, 4. What a prefork child that fetched and settled for itself
    would spend, and how much of it the size of its claims decides;
(d) as (c), with each batch's acks carried by the write of the next claim;
(e) as (d), through the transport's blocking consumer (``transports/redis/fetcher.py``: a plain
    socket, no event loop), the CPU counted from the first claim: what a prefork child that
    fetches for itself spends, against the prefork worker's whole process tree.

Run with celeriac's bench venv (built by ``make bench``), against Redis db 10 (flushed; or
``FLOOR_REDIS_URL``):
``bench/.venvs/celeriac/bin/python bench/floor.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("FLOOR_REDIS_URL", "redis://127.0.0.1:6379/10")
N = 20_000
PREFIX = "celeriac:"
COUNTER = "bench:counter"


def incr_only(n: int) -> None:
    client = redis.Redis.from_url(URL)
    for _ in range(n):
        client.incr("floor:counter")


def claim_incr_ack(prefix: str) -> None:
    from celeriac.transports.redis import scripts as lua

    client = redis.Redis.from_url(URL)
    claim = client.register_script(lua.CLAIM)
    settle = client.register_script(lua.SETTLE)
    rotation = 0
    while True:
        rotation += 1
        deliveries, _ = lua.claimed(claim(args=[prefix, 60, 10, 8, rotation, "celery"]), ["celery"])
        if not deliveries:
            return
        for _ in deliveries:
            client.incr("floor:counter")
        args: list[Any] = [prefix, "ack", ""]
        for delivery in deliveries:
            args += ["celery", *delivery.tag]
        settle(args=args)


def fetch_run_settle(batch: int, carry: bool = False) -> None:
    """(c), or (d) with ``carry``: each batch's acks ride the write of the next claim (the
    transport's ``carry_early_acks``, as a worker's early acks do): one round trip per claim."""
    import asyncio

    from bench_celeriac_app import app

    from celeriac.transports.base import Delivery

    transport = app.create_transport()
    accept = tuple(app.conf.accept_content)
    done: list[Delivery] = []

    class Carried:
        def take(self) -> list[Delivery]:
            taken = done[:]
            done.clear()
            return taken

        def failed(self, exc: BaseException, deliveries: Any) -> None:
            raise AssertionError(f"carried acks failed: {exc!r}")

    if carry:
        transport.carry_early_acks(Carried())

    async def drain() -> None:
        while deliveries := await transport.get(["celery"], batch, timeout=0.5):
            for delivery in deliveries:
                run_here(app, accept, delivery)
            done.extend(deliveries)
            if not carry:
                await transport.ack(done)
                done.clear()
        await transport.ack(done)
        await transport.close()

    asyncio.run(drain())


def run_here(app: Any, accept: tuple[str, ...], delivery: Any) -> None:
    """Decode, run and finish one delivery as a child does (no parent, no pool)."""
    from celeriac.execution.executor import execute, finish
    from celeriac.protocol.codec import decode_body
    from celeriac.worker.request import build_request

    message = delivery.decode()
    args, kwargs, embed = decode_body(message, accept=accept, codecs=app.codecs)
    request = build_request(message, delivery, args, kwargs, embed, "floor")
    task = app.tasks[message.task]
    finish(task, request, execute(task, request), "floor")


def fetch_blocking(batch: int, spent: Any) -> None:
    """(e): the loop of (d) on the blocking consumer; puts its CPU seconds, from its first
    claim (the app is imported already: the process is forked), on ``spent``."""
    from bench_celeriac_app import app

    fetcher = app.create_transport().fetcher()
    assert fetcher is not None, "a Redis broker in the native layout"
    accept = tuple(app.conf.accept_content)
    started = time.process_time()
    held: list[Any] = []
    while deliveries := fetcher.fetch(["celery"], batch, 0.0, acks=held):
        for delivery in deliveries:
            run_here(app, accept, delivery)
        held = deliveries
    spent.put(time.process_time() - started)
    fetcher.close()


def timed(target: Callable[..., None], args: list[tuple[Any, ...]]) -> tuple[float, float]:
    """Wall seconds of the processes, and the CPU seconds they used (reaped children's)."""
    processes = [multiprocessing.Process(target=target, args=a) for a in args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, used


def drained(
    client: redis.Redis,
    app: Any,
    target: Callable[..., None],
    args: list[tuple[Any, ...]],
    counter: str,
) -> tuple[float, float]:
    """N no-op tasks queued, then drained by ``target`` in two processes: the rate, and the
    microseconds of CPU per task (checked by the ``counter`` the drain increments)."""
    client.flushdb()
    app.send_many([("bench.noop", (), {})] * N)
    app.close()
    seconds, used = timed(target, args)
    done = int(client.get(counter) or 0)
    assert done == N, f"{done} of {N} messages drained"
    return N / seconds, used * 1e6 / N


def main() -> None:
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench" / "systems")]
    os.environ["BENCH_REDIS_URL"] = URL
    client = redis.Redis.from_url(URL)
    client.flushdb()
    seconds, used = timed(incr_only, [(N // 2,), (N // 2,)])
    print(f"(a) INCR only, 2 processes: {N / seconds:,.0f}/s, {used * 1e6 / N:.1f} us CPU each")
    from bench_celeriac_app import app

    rate, cpu = drained(client, app, claim_incr_ack, [(PREFIX,), (PREFIX,)], "floor:counter")
    print(
        f"(b) claim 8 + INCR each + ack 8, 2 processes: {rate:,.0f}/s, {cpu:.1f} us CPU per message"
    )
    for batch in (1, 2, 4):
        rate, cpu = drained(client, app, fetch_run_settle, [(batch,), (batch,)], COUNTER)
        print(
            f"(c) celeriac's get {batch} + run + ack {batch}, 2 processes: {rate:,.0f}/s, "
            f"{cpu:.1f} us CPU per task (one idle 0.5 s get included)"
        )
    for batch in (1, 2, 4):
        runs = [(batch, True), (batch, True)]
        rate, cpu = drained(client, app, fetch_run_settle, runs, COUNTER)
        print(
            f"(d) as (c), the acks carried by the next get, {batch} a get: {rate:,.0f}/s, "
            f"{cpu:.1f} us CPU per task"
        )
    for batch in (1, 2, 4):
        spent: Any = multiprocessing.Queue()
        rate, _ = drained(client, app, fetch_blocking, [(batch, spent), (batch, spent)], COUNTER)
        cpu = (spent.get() + spent.get()) * 1e6 / N
        print(
            f"(e) as (d), on the blocking consumer, {batch} a claim: {rate:,.0f}/s, "
            f"{cpu:.1f} us CPU per task"
        )
    client.flushdb()


if __name__ == "__main__":
    main()
