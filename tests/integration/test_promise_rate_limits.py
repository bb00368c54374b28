"""Rate limits over Redis and RabbitMQ (and SQLite): a backlog of a limited task type.

The promise (docs/guide/workers.md, "Rate limits"): ``rate_limit`` limits a task type per worker
with a token bucket that delays only that type; its waiting messages leave the prefetch window,
so other tasks keep flowing, and past a window's worth they go back to the broker, delayed
(docs/guide/brokers.md: requeues by a living worker never dead-letter). So a backlog of a
limited type, far larger than the window, runs whole: every task once, none faster than the
rate, none dead-lettered however often it went back, and a task of another type sent after the
backlog runs before the backlog ends. One task of the backlog is revoked while it waits (in the
worker for its turn, or back on the broker): it never runs (docs/guide/workers.md, "Revoking":
checked when its message arrives and when it gets a slot).

``max_deliveries`` is lowered to 3 so that a message sent back three times would show; the
default (10) is reached the same way by a larger backlog (200 tasks at 10/s, ``-c 2``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.promise_brokers import KINDS, Namespace
from worker_harness import dead_letters

from celeriac.testing import worker_thread

RATE = 10.0
BACKLOG = 16
REVOKED = 9  # revoked while the backlog waits: never run
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


def test_a_rate_limited_backlog_runs_whole_at_its_rate_but_the_revoked_one(
    namespace: Namespace,
) -> None:
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
        sent_at = time.monotonic()
        backlog = [paced.delay(i) for i in range(BACKLOG)]
        other = free.delay()
        backlog[REVOKED].revoke()  # held by the worker for its rate, or still on the broker
        assert other.get(timeout=WAIT) == "free"
        outcomes: list[int | str] = []
        for result in backlog:
            try:
                outcomes.append(result.get(timeout=WAIT))
            except Exception as exc:  # shown whole below: which were lost, and why
                outcomes.append(type(exc).__name__)
    letters = dead_letters(app, namespace.queue)
    why = letters[0].reason if letters else None
    expected = [i if i != REVOKED else "TaskRevokedError" for i in range(BACKLOG)]
    assert outcomes == expected, f"{len(letters)} dead-lettered, e.g. {why}"
    assert letters == []
    ran = sorted(i for i, _ in starts)
    assert ran == [i for i in range(BACKLOG) if i != REVOKED]  # each once, the revoked never
    times = sorted(t for _, t in starts)
    # a bucket of one token lets the first through at once and each next one a 1/rate later;
    # a start may come late after its turn (a loaded machine), never early
    assert times[-1] - sent_at >= (len(times) - 1) / RATE, [t - sent_at for t in times]
    assert free_ran[0] < times[-1]  # the other task type did not wait for the backlog
