"""Task events switched at run time by remote control, as Flower does every few seconds: a worker
started without ``-E`` sends only worker events until ``enable_events``, task events after it,
and none again after ``disable_events``; ``heartbeat`` makes it beat at once (Celery's freq 5).
A real worker in a thread on the memory broker, controlled through ``app.control``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from event_collector import Collector

from celeriac import Celeriac
from celeriac.testing import memory_app, worker_thread
from celeriac.worker.events_step import events_step


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = memory_app("switch")

    @application.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    yield application
    application.close()


def test_enable_and_disable_events_switch_task_events_at_run_time(app: Celeriac) -> None:
    collector = Collector(app.create_transport())
    name = f"sw{uuid.uuid4().hex[:6]}@test"
    try:
        with worker_thread(app, hostname=name) as worker:
            step = events_step(worker)
            assert step is not None

            def task_events() -> bool:  # read afresh each time (a property of the running step)
                assert step is not None
                return step.task_events

            assert not task_events()
            quiet = app.send_task("t.add", (1, 1))
            assert quiet.get(timeout=5) == 2

            assert app.control.enable_events(destination=[name], reply=True, timeout=5)
            assert task_events()
            loud = app.send_task("t.add", (2, 2))
            assert loud.get(timeout=5) == 4
            collector.wait_for(
                "the task's events once enabled",
                lambda es: any(
                    e.get("uuid") == loud.id and e["type"] == "task-succeeded" for e in es
                ),
            )

            app.control.disable_events(destination=[name], reply=True, timeout=5)
            assert not task_events()
            again = app.send_task("t.add", (3, 3))
            assert again.get(timeout=5) == 6

            app.control.heartbeat(destination=[name])
            collector.wait_for(
                "the heartbeat asked for",
                lambda es: any(e["type"] == "worker-heartbeat" and e["freq"] == 5 for e in es),
            )
        collector.wait_for(
            "worker-offline", lambda es: any(e["type"] == "worker-offline" for e in es)
        )
        task_ids = {e.get("uuid") for e in collector.events(name) if e["type"].startswith("task-")}
        assert task_ids == {loud.id}  # nothing before enable_events, nothing after disable
    finally:
        collector.close()
