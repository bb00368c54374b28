"""Worker components, the autoscaler's policy, remote control and rate limits, in-process."""

from __future__ import annotations

import threading
import time

import pytest

from celeriac import Celeriac, ImproperlyConfigured, TaskRevokedError, states
from celeriac.testing import memory_app, worker_thread
from celeriac.worker.autoscale import Autoscaler, ScaleStats, parse_autoscale
from celeriac.worker.components import Component, in_dependency_order
from celeriac.worker.worker import Worker


def named(name: str, requires: tuple[str, ...] = ()) -> Component:
    cls = type(f"C_{name}", (Component,), {"name": name, "requires": requires})
    component: Component = cls()
    return component


def test_dependency_order_and_errors() -> None:
    order = in_dependency_order([named("c", ("b",)), named("a"), named("b", ("a",))])
    assert [c.name for c in order] == ["a", "b", "c"]
    with pytest.raises(ImproperlyConfigured, match="requires 'nope'"):
        in_dependency_order([named("a", ("nope",))])
    with pytest.raises(ImproperlyConfigured, match="a -> b -> a"):
        in_dependency_order([named("a", ("b",)), named("b", ("a",))])
    with pytest.raises(ImproperlyConfigured, match="two components"):
        in_dependency_order([named("a"), named("a")])


def test_user_component_starts_after_its_requirements_and_stops_first(app: Celeriac) -> None:
    events: list[str] = []

    class Audit(Component):
        name = "audit"
        requires = ("consumer",)
        task_options = {"audited": False}

        async def start(self, worker: Worker) -> None:
            assert worker.consumer is not None  # consumer started before us
            events.append("start")

        async def stop(self, worker: Worker) -> None:
            assert worker.pool is not None  # the pool stops after us
            events.append("stop")

    app.add_component(Audit)

    @app.task(audited=True)  # the component declared this option
    def f() -> int:
        return 1

    with worker_thread(app) as worker:
        assert events == ["start"]
        assert [c.name for c in worker.components][-1] == "audit"
        assert f.delay().get(timeout=10) == 1
    assert events == ["start", "stop"]
    with pytest.raises(ImproperlyConfigured, match="not a Component"):
        app.add_component(object)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (ScaleStats(2, 2, 5, 10, 0, 1, 8), 8),  # backlog: grow, capped at max
        (ScaleStats(2, 1, 1, 0, 0, 1, 8), 2),  # a little backlog: busy + backlog
        (ScaleStats(6, 1, 0, 0, 5, 1, 8), 6),  # idle, but not for keepalive yet
        (ScaleStats(6, 1, 0, 0, 31, 2, 8), 2),  # idle long enough: down to min
        (ScaleStats(6, 3, 0, 0, 31, 1, 8), 3),  # keeps what is busy
    ],
)
def test_default_autoscaler_policy(stats: ScaleStats, expected: int) -> None:
    assert Autoscaler().target(stats) == expected


def test_parse_autoscale() -> None:
    assert parse_autoscale("10,2") == (10, 2)
    assert parse_autoscale("4") == (4, 1)
    for bad in ("x", "2,10", "0,0", "1,2,3"):
        with pytest.raises(ImproperlyConfigured):
            parse_autoscale(bad)


class GrowOnly(Autoscaler):
    """A custom policy, as a user would plug one in: scale to max whenever anything waits."""

    interval = 0.05

    def target(self, stats: ScaleStats) -> int:
        return stats.maximum if (stats.queued or stats.waiting) else stats.current


def test_autoscale_grows_under_backlog_with_a_custom_policy() -> None:
    app = memory_app("scale", worker_autoscaler=f"{__name__}:GrowOnly")
    release = threading.Event()
    running = threading.Semaphore(0)

    @app.task
    def block() -> None:
        running.release()
        release.wait(10)

    results = [block.delay() for _ in range(12)]
    with worker_thread(app, autoscale=(4, 1), prefetch_multiplier=1) as worker:
        for _ in range(4):  # four run at once only if the pool grew from 1 to 4
            assert running.acquire(timeout=10)
        assert worker.pool is not None
        assert worker.pool.concurrency == 4
        release.set()
        for r in results:
            r.get(timeout=10)
    app.close()


def test_remote_revoke_and_terminate_flag(app: Celeriac) -> None:
    ran: list[int] = []

    @app.task
    def f(x: int) -> None:
        ran.append(x)

    with worker_thread(app) as worker:
        later = f.apply_async((1,), countdown=0.5)
        app.control.revoke(later.id)
        deadline = time.monotonic() + 10
        while later.id not in worker.state.revoked and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(TaskRevokedError):
            later.get(timeout=10)
    assert later.state == states.REVOKED
    assert ran == []


def test_rate_limit_delays_only_its_task_type_and_changes_at_run_time(app: Celeriac) -> None:
    @app.task(rate_limit="5/s")
    def limited() -> float:
        return time.monotonic()

    @app.task
    def free() -> float:
        return time.monotonic()

    with worker_thread(app, concurrency=2) as worker:
        started = time.monotonic()
        slow = [limited.delay() for _ in range(4)]
        fast = [free.delay() for _ in range(20)]
        fast_done = max(r.get(timeout=10) for r in fast)
        slow_done = sorted(r.get(timeout=10) for r in slow)
        # a full bucket lets the first through at once; 5/s spaces the rest by ~0.2 s
        assert slow_done[-1] - slow_done[0] >= 0.15
        assert fast_done - started < slow_done[-1] - started
        assert worker.consumer is not None
        app.control.rate_limit(limited.name, None)
        deadline = time.monotonic() + 10
        while worker.consumer.rate_limiter.rate(limited.name) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_bad_rate_limit_fails_at_declaration(app: Celeriac) -> None:
    with pytest.raises(ImproperlyConfigured, match="rate_limit"):

        @app.task(rate_limit="ten per second")
        def f() -> None: ...
