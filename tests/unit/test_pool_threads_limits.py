"""Time limits in the threads and solo pools, on a real in-process worker.

Every wait here is on an event or a result; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator

import pytest

from celeriac import Celeriac, states
from celeriac.context import Request
from celeriac.errors import SoftTimeLimitExceeded, TimeLimitExceeded
from celeriac.testing import memory_app, worker_thread
from celeriac.worker.pools.base import PoolOptions
from celeriac.worker.pools.threads import SoloPool


@pytest.fixture(scope="module")
def shared() -> Iterator[Celeriac]:
    """One worker (threads, concurrency 2) for the whole module: tasks are declared per test."""
    app = memory_app("threads-limits")
    with worker_thread(app, pool="threads", concurrency=2):
        yield app
    app.close()


def test_soft_limit_interrupts_a_pure_python_loop(shared: Celeriac) -> None:
    @shared.task(soft_time_limit=0.2)
    def spin_and_clean_up() -> str:
        try:
            while True:
                pass
        except SoftTimeLimitExceeded:
            return "cleaned up"

    @shared.task(soft_time_limit=0.2)
    def spin() -> None:
        n = 0
        while True:
            n += 1

    caught, uncaught = spin_and_clean_up.delay(), spin.delay()
    assert caught.get(timeout=10) == "cleaned up"
    with pytest.raises(SoftTimeLimitExceeded, match=r"soft time limit \(0.2s\) exceeded"):
        uncaught.get(timeout=10)
    assert uncaught.state == states.FAILURE


@pytest.fixture
def untraced() -> Iterator[None]:
    """Coverage paused for the test (make unit with COVERAGE=1): while an exception raised into a
    thread blocked in C waits to be delivered, CPython 3.11 under a tracer crawls in every
    thread, and the pool's loop misses the hard limit it is to enforce."""
    try:
        import coverage
    except ImportError:  # pragma: no cover - a dev dependency
        yield
        return
    running = coverage.Coverage.current()
    if running is None:
        yield
        return
    running.stop()
    try:
        yield
    finally:
        running.start()


@pytest.mark.usefixtures("untraced")
def test_hard_limit_abandons_the_thread_keeps_full_concurrency_and_ignores_its_late_return(
    shared: Celeriac,
) -> None:
    release, returned = threading.Event(), threading.Event()
    stuck_threads: list[threading.Thread] = []
    meet = threading.Barrier(2, timeout=10)

    @shared.task(time_limit=0.3)
    def stuck() -> str:
        stuck_threads.append(threading.current_thread())
        # A C-level wait: no exception can reach it until it returns. A plain try, because the
        # raise may land in Python frames a context manager's __exit__ would not cover.
        try:  # noqa: SIM105
            release.wait(30)
        except TimeLimitExceeded:
            pass  # even the pool's last attempt to stop it is swallowed...
        returned.set()
        return "too late"  # ...and this success must not replace the stored FAILURE

    @shared.task
    def rendezvous() -> int:
        return meet.wait()  # only returns if both run at the same time

    result = stuck.delay()
    with pytest.raises(TimeLimitExceeded, match=r"hard time limit \(0.3s\) exceeded"):
        result.get(timeout=10)
    assert "release.wait(30)" in (result.traceback or "")  # where the thread was stuck
    assert not returned.is_set()  # still running: abandoned, not killed
    # Both slots still work while the abandoned thread is blocked.
    pair = [rendezvous.delay(), rendezvous.delay()]
    assert sorted(r.get(timeout=10) for r in pair) == [0, 1]

    release.set()
    assert returned.wait(10)
    [thread] = stuck_threads
    thread.join(10)  # it retires once its task returns
    assert not thread.is_alive()
    assert result.state == states.FAILURE  # the late return stored nothing
    assert isinstance(result.result, TimeLimitExceeded)


def test_async_tasks_in_threads_are_cancelled_at_their_limits(shared: Celeriac) -> None:
    @shared.task(soft_time_limit=0.1)
    async def sleeps() -> None:
        await asyncio.sleep(30)

    @shared.task(soft_time_limit=0.1, time_limit=5)
    async def cleans_up() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "cancelled cleanly"
        return "not cancelled"

    @shared.task(time_limit=0.2)
    async def swallows() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # ignores the hard limit's cancel...
            await asyncio.sleep(30)
        await asyncio.sleep(0.05)  # ...and goes on, unobserved, on its thread's loop
        return "never stored"

    soft, clean, hard = sleeps.delay(), cleans_up.delay(), swallows.delay()
    with pytest.raises(SoftTimeLimitExceeded):
        soft.get(timeout=10)
    assert clean.get(timeout=10) == "cancelled cleanly"
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=10)


def test_worker_wide_limits_apply_and_task_options_win() -> None:
    app = memory_app("threads-worker-limits")

    @app.task
    def spin() -> None:
        while True:
            pass

    @app.task(soft_time_limit=30)
    def quick() -> str:
        return "ok"

    with worker_thread(app, pool="threads", concurrency=1, soft_time_limit=0.1):
        with pytest.raises(SoftTimeLimitExceeded):
            spin.delay().get(timeout=10)
        assert quick.delay().get(timeout=10) == "ok"
    app.close()


@pytest.mark.usefixtures("untraced")
def test_solo_pool_replaces_its_only_thread_after_a_hard_limit() -> None:
    app = memory_app("solo-limits")
    release = threading.Event()

    @app.task
    def stuck() -> None:
        release.wait(30)

    @app.task
    def after() -> str:
        return threading.current_thread().name

    async def main() -> tuple[str, str, str]:
        pool = SoloPool(app, 8, "solo@test", PoolOptions(time_limit=0.2))
        await pool.start()
        first = await pool.run(stuck, Request(id=str(uuid.uuid4()), task=stuck.name))
        second = await pool.run(after, Request(id=str(uuid.uuid4()), task=after.name))
        abandoned = pool.threads.abandoned
        release.set()
        await pool.stop()
        return first.state, second.value, f"{pool.concurrency}/{abandoned}"

    first, thread_name, sizes = asyncio.run(main())
    assert first == states.FAILURE
    assert thread_name.startswith("celeriac-solo-")
    assert sizes == "1/1"  # one thread serving, one abandoned
    app.close()
