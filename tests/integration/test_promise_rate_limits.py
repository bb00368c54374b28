"""Rate limits over Redis and RabbitMQ (and SQLite): a backlog of a limited task type.

The promise (docs/guide/workers.md, "Rate limits"): ``rate_limit`` limits a task type per worker
with a token bucket that delays only that type; its waiting messages leave the prefetch window,
so other tasks keep flowing, and past a window's worth they go back to the broker, delayed
(docs/guide/brokers.md: requeues by a living worker never dead-letter). So a backlog of a
limited type, far larger than the window, runs whole: every task once, none faster than the
rate, none dead-lettered however often it went back, and a task of another type sent after the
backlog runs before the backlog ends.

``max_deliveries`` is lowered to 3 so that a message sent back three times would show; the
default (10) is reached the same way by a larger backlog (200 tasks at 10/s, ``-c 2``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.promise_brokers import KINDS, Namespace

from celeriac import Celeriac
from celeriac.testing import worker_thread
from celeriac.transports.base import DeadLetter

RATE = 10.0
BACKLOG = 16
WAIT = 20.0


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "redis",
            marks=pytest.mark.redis,
        ),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def namespace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Namespace]:
    assert request.param in KINDS
    made = Namespace(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


def dead_letters(app: Celeriac, queue: str) -> list[DeadLetter]:
    async def read() -> list[DeadLetter]:
        transport = app.create_transport()
        await transport.connect()
        try:
            return await transport.dead_letters(queue)
        finally:
            await transport.close()

    return asyncio.run(read())


def test_a_rate_limited_backlog_runs_whole_at_its_rate(namespace: Namespace) -> None:
    app = namespace.app(broker_transport_options={"max_deliveries": 3})
    starts: list[tuple[int, float]] = []
    lock = threading.Lock()
    free_ran: list[float] = []

    @app.task(name="pr.paced", rate_limit=f"{RATE:g}/s")
    def paced(i: int) -> int:
        with lock:
            starts.append((i, time.monotonic()))
        return i

    @app.task(name="pr.free")
    def free() -> str:
        free_ran.append(time.monotonic())
        return "free"

    with worker_thread(app, concurrency=1, prefetch_multiplier=2):
        backlog = [paced.delay(i) for i in range(BACKLOG)]
        other = free.delay()
        assert other.get(timeout=WAIT) == "free"
        outcomes: list[int | str] = []
        for result in backlog:
            try:
                outcomes.append(result.get(timeout=WAIT))
            except Exception as exc:  # shown whole below: which were lost, and why
                outcomes.append(repr(exc))
    letters = dead_letters(app, namespace.queue)
    assert outcomes == list(range(BACKLOG)), (
        f"{len(letters)} dead-lettered, e.g. {letters[0].reason if letters else None}"
    )
    assert letters == []
    ran = sorted(i for i, _ in starts)
    assert ran == list(range(BACKLOG))  # each once
    times = sorted(t for _, t in starts)
    # a bucket of one token: n starts span at least (n - 1) / rate, whatever the load
    assert times[-1] - times[0] >= (BACKLOG - 1) / RATE - 0.01, times
    assert free_ran[0] < times[-1]  # the other task type did not wait for the backlog
