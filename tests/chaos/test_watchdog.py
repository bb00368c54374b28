"""The fetch watchdog (``src/celeriac/worker/watchdog.py``) on a real fault: Redis connections
left half-open under a steady load. The worker's fetch, or the acks its window waits on, wait
on a link that answers nothing while the queue fills; the worker must say so, naming the queue,
and fetch again by itself, with nothing lost."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import _paths  # noqa: F401  (sys.path for the chaos modules)
import pytest
from chaos_brokers import redis_broker
from chaos_fleet import STALL_LINE
from chaos_run import ChaosRun

from celeriac.context import Request
from celeriac.testing import memory_app
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import pool_class
from celeriac.worker.pools.base import PoolOptions
from celeriac.worker.state import WorkerState
from celeriac.worker.watchdog import FetchWatchdog

pytestmark = [pytest.mark.chaos]


@pytest.mark.slow
def test_half_open_redis_is_reported_and_recovered(tmp_path: Path) -> None:
    with redis_broker(tmp_path) as broker:
        run = ChaosRun(broker, tmp_path, ["half-open"], stall=1.0)
        del run.fleet.slots[0]  # one threads worker: nobody else fetches for it
        run.run()  # every task done once, the worker alive and fetching
        stderr = "\n".join(w.stderr() for w in run.fleet.workers())
        warned = [line for line in stderr.splitlines() if STALL_LINE in line]
        assert warned, run.outputs()
        assert run.queue in warned[0], warned[0]
        assert "fetching again after" in stderr, run.outputs()


def test_watchdog_rules_in_process(caplog: pytest.LogCaptureFixture) -> None:
    """The rules on a real consumer that never fetches (its fetch loop is not started), over
    the memory broker, on a clock of the test's: a ready message waits and nothing moves, so
    after the threshold it says so, naming the queue; a pool busy with long tasks is not a
    stall; the first progress afterwards is reported."""
    app = memory_app("watchdog")
    app.send_task("anything", queue="celery")
    now = [0.0]

    async def scenario() -> list[str]:
        transport = app.create_transport()
        await transport.connect()
        pool_cls = pool_class("threads")
        pool = pool_cls(app, 2, "w@test", PoolOptions())
        consumer = Consumer(
            app,
            transport,
            pool,
            app.queues(None),
            prefetch_multiplier=1,
            hostname="w@test",
            state=WorkerState(),
        )
        watchdog = FetchWatchdog(consumer, 10.0, clock=lambda: now[0])
        seen: list[str] = []
        for at in (0.0, 5.0, 10.0):  # stalled from 0: said at 10
            now[0] = at
            await watchdog.check()
            seen.append(f"{at}: {watchdog.restarts}")
        consumer.state.active.update(
            {"a": Request(task="t", id="a"), "b": Request(task="t", id="b")}
        )
        now[0] = 30.0
        await watchdog.check()  # the pool is busy: not a stall (and the stall is over)
        seen.append(f"busy: {watchdog.restarts} {watchdog.stalled_since}")
        consumer.state.active.clear()
        for at in (40.0, 50.0):
            now[0] = at
            await watchdog.check()
        consumer.state.processed += 1
        now[0] = 55.0
        await watchdog.check()
        seen.append(f"after: {watchdog.restarts} {watchdog.stalled_since}")
        await transport.close()
        return seen

    with caplog.at_level(logging.WARNING, logger="celeriac.worker"):
        seen = asyncio.run(scenario())
    app.close()
    assert seen == ["0.0: 0", "5.0: 0", "10.0: 1", "busy: 1 None", "after: 2 None"]
    warnings = [r.getMessage() for r in caplog.records if STALL_LINE in r.getMessage()]
    assert len(warnings) == 2 and "celery (oldest ready for" in warnings[0], warnings
    assert "nothing fetched for 10s" in warnings[0] and "restarting the fetch" in warnings[0]
    assert any("fetching again after 15s" in r.getMessage() for r in caplog.records)
