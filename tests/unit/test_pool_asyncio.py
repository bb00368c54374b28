"""The asyncio pool on a real in-process worker: concurrency, sync tasks, limits, terminate.

Every wait here is on an event or a result; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, TaskRevokedError, states
from celeriac.context import Request
from celeriac.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from celeriac.testing import memory_app, worker_thread
from celeriac.worker.pools.asyncio import AsyncioPool

N = 1000
NAP = 0.2


@pytest.fixture(scope="module")
def shared() -> Iterator[Celeriac]:
    """One asyncio worker (-c 1000) for the module: tasks are declared per test."""
    app = memory_app("asyncio-pool")
    with worker_thread(app, pool="asyncio", concurrency=N):
        yield app
    app.close()


def test_a_thousand_async_tasks_run_at_once(shared: Celeriac) -> None:
    started = 0
    everyone: dict[str, asyncio.Event] = {}

    @shared.task
    async def wait_for_all(i: int) -> int:
        nonlocal started
        gate = everyone.setdefault("gate", asyncio.Event())  # made on the worker's loop
        started += 1
        if started == N:
            gate.set()
        await asyncio.wait_for(gate.wait(), 15)  # only opens once all N are running together
        await asyncio.sleep(NAP)
        return i

    begin = time.perf_counter()
    results = [wait_for_all.delay(i) for i in range(N)]
    values = [r.get(timeout=20) for r in results]
    elapsed = time.perf_counter() - begin
    assert values == list(range(N))
    assert elapsed < N * NAP / 10, f"{N} tasks of {NAP}s took {elapsed:.2f}s"


def test_sync_tasks_run_in_threads_and_never_block_the_loop(shared: Celeriac) -> None:
    opened = threading.Event()

    @shared.task
    def blocks_until_opened() -> str:
        # On the loop this would deadlock: the task that opens it could never run.
        assert opened.wait(10)
        return threading.current_thread().name

    @shared.task
    async def opens() -> None:
        await asyncio.sleep(0)
        opened.set()

    @shared.task
    def add(x: int, y: int) -> int:
        return x + y

    @shared.task
    async def aadd(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    blocked = blocks_until_opened.delay()
    opens.delay().get(timeout=10)
    assert blocked.get(timeout=10).startswith("celeriac-asyncio-sync-")
    mixed = [(add if i % 2 else aadd).delay(i, i) for i in range(100)]
    assert [r.get(timeout=10) for r in mixed] == [2 * i for i in range(100)]


def test_soft_limit_cancels_async_tasks(shared: Celeriac) -> None:
    @shared.task(soft_time_limit=0.1)
    async def sleeps() -> None:
        await asyncio.sleep(30)

    @shared.task(soft_time_limit=0.1)
    async def cleans_up() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "cancelled cleanly"
        return "not cancelled"

    soft, clean = sleeps.delay(), cleans_up.delay()
    with pytest.raises(SoftTimeLimitExceeded, match=r"soft time limit \(0.1s\) exceeded"):
        soft.get(timeout=10)
    assert soft.state == states.FAILURE
    assert clean.get(timeout=10) == "cancelled cleanly"


def test_hard_limit_fails_a_task_that_swallows_cancellation(shared: Celeriac) -> None:
    ended_late = threading.Event()

    @shared.task(time_limit=0.2)
    async def stubborn() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # ignores the hard limit...
            await asyncio.sleep(30)
        await asyncio.sleep(0.1)  # ...goes on, unobserved...
        ended_late.set()
        return "too late"  # ...and this is dropped

    @shared.task
    async def ping() -> str:
        return "pong"

    result = stubborn.delay()
    with pytest.raises(TimeLimitExceeded, match=r"hard time limit \(0.2s\) exceeded"):
        result.get(timeout=10)
    assert ended_late.wait(10)
    assert ping.delay().get(timeout=10) == "pong"  # the loop moved on past the late return
    assert result.state == states.FAILURE
    assert isinstance(result.result, TimeLimitExceeded)


def test_sync_tasks_get_the_threads_limits(shared: Celeriac) -> None:
    @shared.task(soft_time_limit=0.1)
    def spin() -> str:
        try:
            while True:
                pass
        except SoftTimeLimitExceeded:
            return "interrupted"

    assert spin.delay().get(timeout=10) == "interrupted"


def _run_on_pool(app: Celeriac, body: Any) -> Any:
    async def main() -> Any:
        pool = AsyncioPool(app, 10, "asyncio@test")
        pool.reap_grace = 0.05
        await pool.start()
        try:
            return await body(pool)
        finally:
            await pool.stop()

    return asyncio.run(main())


def test_terminate_revokes_a_running_async_task(app: Celeriac) -> None:
    @app.task
    async def forever(started: str) -> None:
        running[started].set()
        await asyncio.sleep(30)

    @app.task
    async def deaf(started: str) -> None:
        running[started].set()
        while True:  # ignores every cancellation; terminate must not wait for it
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)

    running: dict[str, asyncio.Event] = {}

    async def body(pool: AsyncioPool) -> list[str]:
        states_seen = []
        for task in (forever, deaf):
            task_id = str(uuid.uuid4())
            running[task_id] = asyncio.Event()
            request = Request(id=task_id, task=task.name, args=(task_id,))
            run = asyncio.create_task(pool.run(task, request))
            await running[task_id].wait()
            assert await pool.terminate(task_id)
            outcome = await run
            assert not await pool.terminate(task_id)  # no longer running here
            states_seen.append(outcome.state)
            assert await asyncio.to_thread(app.flush_results)  # results are written behind
            revoked = app.AsyncResult(task_id)
            assert revoked.state == states.REVOKED
            with pytest.raises(TaskRevokedError, match="terminated"):
                revoked.get(timeout=1)
        assert not await pool.terminate("never-seen")
        return states_seen

    assert _run_on_pool(app, body) == [states.REVOKED, states.REVOKED]


def test_terminate_cannot_stop_a_sync_task(app: Celeriac) -> None:
    release = threading.Event()
    entered = threading.Event()

    @app.task
    def blocking() -> str:
        entered.set()
        release.wait(10)
        return "done"

    async def body(pool: AsyncioPool) -> str:
        task_id = str(uuid.uuid4())
        run = asyncio.create_task(pool.run(blocking, Request(id=task_id, task=blocking.name)))
        await asyncio.to_thread(entered.wait, 10)
        terminated = await pool.terminate(task_id)
        release.set()
        outcome = await run
        return f"{terminated} {outcome.value}"

    assert _run_on_pool(app, body) == "False done"


def test_callbacks_of_async_tasks_are_sent_without_blocking(shared: Celeriac) -> None:
    got: list[Any] = []
    both = threading.Event()

    @shared.task
    async def double(x: int) -> int:
        return 2 * x

    @shared.task(time_limit=0.1)
    async def overruns() -> None:
        await asyncio.sleep(30)

    @shared.task
    async def collect(value: Any) -> None:
        got.append(value)
        if len(got) == 2:
            both.set()

    double.apply_async((21,), link=collect.s())
    failed = overruns.apply_async(link_error=collect.s())
    assert both.wait(10)
    assert sorted(map(str, got)) == sorted(["42", failed.id])
