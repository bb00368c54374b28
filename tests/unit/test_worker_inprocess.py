"""The worker's semantics, end to end in one process on the memory transport."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from celeriac import (
    Celeriac,
    Ignore,
    Reject,
    Task,
    TaskRejectedError,
    TaskRevokedError,
    states,
)
from celeriac.protocol.message import Message
from celeriac.testing import memory_app, worker_thread
from celeriac.transports.base import DeadLetter, Outgoing


def dead_letters(app: Celeriac, queue: str = "celery") -> list[DeadLetter]:
    transport = app.create_transport()

    async def run() -> list[DeadLetter]:
        await transport.connect()
        return await transport.dead_letters(queue)

    return asyncio.run(run())


def queue_size(app: Celeriac, queue: str = "celery") -> int:
    transport = app.create_transport()

    async def run() -> int:
        await transport.connect()
        return await transport.size(queue)

    return asyncio.run(run())


class CustomError(Exception):
    pass


def test_results_sync_and_async_tasks(app: Celeriac) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    async def aadd(x: int, y: int) -> int:
        await asyncio.sleep(0)
        return x + y

    with worker_thread(app):
        results = [add.delay(i, i) for i in range(50)] + [aadd.delay(i, 1) for i in range(50)]
        values = [r.get(timeout=10) for r in results]
    assert values == [2 * i for i in range(50)] + [i + 1 for i in range(50)]
    assert results[0].state == states.SUCCESS
    assert results[0].successful()


def test_async_tasks_reuse_one_loop_per_thread(app: Celeriac) -> None:
    loops: set[int] = set()
    lock = threading.Lock()

    @app.task
    async def which_loop() -> None:
        with lock:
            loops.add(id(asyncio.get_running_loop()))

    with worker_thread(app, concurrency=2):
        for r in [which_loop.delay() for _ in range(40)]:
            r.get(timeout=10)
    assert 1 <= len(loops) <= 2


def test_failure_reraises_own_type_with_traceback(app: Celeriac) -> None:
    @app.task
    def boom(x: int) -> None:
        raise CustomError(f"bad {x}")

    with worker_thread(app):
        result = boom.delay(3)
        with pytest.raises(CustomError, match="bad 3"):
            result.get(timeout=10)
    assert result.state == states.FAILURE
    assert result.failed()
    assert "CustomError" in (result.traceback or "")
    assert isinstance(result.result, CustomError)
    assert isinstance(result.get(propagate=False), CustomError)


def test_retry_then_success_records_retries(app: Celeriac) -> None:
    @app.task(bind=True, max_retries=3)
    def flaky(self: Task[[], int]) -> int:
        if self.request.retries < 2:
            raise self.retry(countdown=0.01)
        return self.request.retries

    with worker_thread(app):
        assert flaky.delay().get(timeout=10) == 2


def test_autoretry_with_backoff_then_max_retries_exceeded(app: Celeriac) -> None:
    runs: list[int] = []

    @app.task(bind=True, autoretry_for=(KeyError,), retry_backoff=0.01, max_retries=2)
    def always(self: Task[[], None]) -> None:
        runs.append(self.request.retries)
        raise KeyError("missing")

    with worker_thread(app):
        result = always.delay()
        with pytest.raises(KeyError, match="missing"):  # its own error once retries are spent
            result.get(timeout=10)
    assert runs == [0, 1, 2]


def test_dont_autoretry_for_wins(app: Celeriac) -> None:
    @app.task(autoretry_for=(Exception,), dont_autoretry_for=(ValueError,), max_retries=5)
    def f() -> None:
        raise ValueError("no retry")

    with worker_thread(app), pytest.raises(ValueError, match="no retry"):
        f.delay().get(timeout=10)


def test_expired_task_is_revoked_and_not_run(app: Celeriac) -> None:
    ran: list[bool] = []

    @app.task
    def f() -> None:
        ran.append(True)

    result = f.apply_async(expires=-1)
    with worker_thread(app), pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=10)
    assert result.state == states.REVOKED
    assert ran == []


def test_revoked_id_is_not_run(app: Celeriac) -> None:
    ran: list[bool] = []

    @app.task
    def f() -> None:
        ran.append(True)

    result = f.apply_async(countdown=0.2)
    with worker_thread(app) as worker:
        worker.state.revoked.add(result.id)
        with pytest.raises(TaskRevokedError):
            result.get(timeout=10)
    assert ran == []


def test_poison_messages_go_to_dead_letters_and_worker_keeps_running(app: Celeriac) -> None:
    @app.task
    def ok() -> str:
        return "ok"

    unknown = app.send_task("no.such.task")
    pickled = app.send_task(ok.name, serializer="pickle")
    garbage = Message(headers={"task": ok.name, "id": "garbage-1"}, body=b"\xff\xfe not json")
    transport = app.create_transport()

    async def publish_garbage() -> None:
        await transport.connect()
        await transport.publish(Outgoing(garbage, "", "celery"))

    asyncio.run(publish_garbage())
    with worker_thread(app):
        assert ok.delay().get(timeout=10) == "ok"
        reasons = []
        for _ in range(200):
            reasons = [d.reason for d in dead_letters(app)]
            if len(reasons) == 3:
                break
            threading.Event().wait(0.02)
    assert any("unknown task 'no.such.task'" in r and unknown.id in r for r in reasons)
    assert any(pickled.id in r and "application/x-python-serialize" in r for r in reasons)
    assert any("garbage-1" in r for r in reasons)


def test_reject_dead_letters_and_requeue_with_acks_late(app: Celeriac) -> None:
    attempts: list[int] = []

    @app.task(acks_late=True)
    def refuse() -> None:
        raise Reject("not today", requeue=False)

    @app.task(bind=True, acks_late=True)
    def once_more(self: Task[[], str]) -> str:
        attempts.append(self.request.delivery_count)
        if len(attempts) == 1:
            raise Reject("try again", requeue=True)
        return "done"

    with worker_thread(app):
        refused = refuse.delay()
        assert once_more.delay().get(timeout=10) == "done"
        with pytest.raises(TaskRejectedError, match="not today"):
            refused.get(timeout=10)
    assert refused.state == states.REJECTED
    assert [d.reason for d in dead_letters(app)] == ["not today"]
    assert attempts == [1, 2]


def test_ignore_stores_nothing_and_ignore_result(app: Celeriac) -> None:
    @app.task
    def ignored() -> None:
        raise Ignore()

    @app.task(ignore_result=True)
    def quiet() -> int:
        return 1

    @app.task
    def marker() -> int:
        return 2

    with worker_thread(app, concurrency=1):
        a, b = ignored.delay(), quiet.delay()
        assert marker.delay().get(timeout=10) == 2
    assert a.state == states.PENDING
    assert b.state == states.PENDING


def test_link_and_link_error_callbacks(app: Celeriac) -> None:
    got: list[Any] = []
    done = threading.Event()

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    @app.task
    def collect(value: Any) -> None:
        got.append(value)
        if len(got) == 2:
            done.set()

    @app.task
    def fail() -> None:
        raise ValueError("x")

    with worker_thread(app):
        add.apply_async((2, 3), link=collect.s())
        failed = fail.apply_async(link_error=collect.s())
        assert done.wait(10)
    assert sorted(map(str, got)) == sorted(["5", failed.id])


def test_acks_late_failure_is_acked_unless_told_otherwise(app: Celeriac) -> None:
    @app.task(acks_late=True)
    def fail_acked() -> None:
        raise ValueError("acked")

    @app.task(acks_late=True, acks_on_failure_or_timeout=False)
    def fail_kept() -> None:
        raise ValueError("kept")

    with worker_thread(app):
        with pytest.raises(ValueError, match="acked"):
            fail_acked.delay().get(timeout=10)
        with pytest.raises(ValueError, match="kept"):
            fail_kept.delay().get(timeout=10)
        for _ in range(200):
            if dead_letters(app):
                break
            threading.Event().wait(0.02)
    [letter] = dead_letters(app)
    assert "kept" in letter.reason


def test_prefetch_window_bounds_what_a_worker_holds() -> None:
    app = memory_app("window")
    release = threading.Event()
    started = threading.Semaphore(0)

    @app.task
    def block() -> None:
        started.release()
        release.wait(10)

    results = [block.delay() for _ in range(20)]
    with worker_thread(app, concurrency=2, prefetch_multiplier=2) as worker:
        assert started.acquire(timeout=10)
        assert started.acquire(timeout=10)
        # 2 running + 2 prefetched; the other 16 still wait in the broker
        # the loop learns that a thread started a task a moment after the task itself does
        for _ in range(200):
            if queue_size(app) == 16 and len(worker.state.active) == 2:
                break
            threading.Event().wait(0.01)
        assert queue_size(app) == 16
        assert len(worker.state.active) == 2
        release.set()
        for r in results:
            r.get(timeout=10)
    app.close()


def test_warm_stop_returns_prefetched_messages() -> None:
    app = memory_app("warm")
    release = threading.Event()
    started = threading.Event()

    @app.task
    def block() -> str:
        started.set()
        release.wait(10)
        return "finished"

    first = block.delay()
    for _ in range(5):
        block.delay()
    with worker_thread(app, concurrency=1, prefetch_multiplier=4) as worker:
        assert started.wait(10)
        worker.stop()
        threading.Timer(0.2, release.set).start()
    assert first.get(timeout=10) == "finished"
    assert queue_size(app) == 5  # the three prefetched came back; two never left
    app.close()


def test_short_tasks_are_not_starved_behind_a_long_one() -> None:
    """Celery's ``-O fair``: a slot that frees up takes the next message, whatever slot holds
    the long task, so short tasks queued behind a long one still flow."""
    app = memory_app("fair")
    release = threading.Event()

    @app.task
    def long() -> None:
        release.wait(10)

    @app.task
    def short(x: int) -> int:
        return x

    blocker = long.delay()
    shorts = [short.delay(i) for i in range(30)]
    with worker_thread(app, concurrency=2, prefetch_multiplier=4):
        assert [r.get(timeout=10) for r in shorts] == list(range(30))
        assert not blocker.ready()  # all thirty ran while the long task still held its slot
        release.set()
        blocker.get(timeout=10)
    app.close()
