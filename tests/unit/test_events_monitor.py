"""``celeriac events``'s terminal monitor, driven by Textual's own harness (``App.run_test()``
and its Pilot) and fed by a real worker's events: a worker in a thread on the memory broker,
sending task events (``-E``), read by a real :class:`EventReceiver`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from celeriac import Celeriac
from celeriac.events import EventReceiver
from celeriac.events.event import Event
from celeriac.events.monitor import EventsMonitor
from celeriac.testing import memory_app, worker_thread

TIMEOUT = 10.0


@pytest.fixture
def app() -> Iterator[Celeriac]:
    application = memory_app("monitor")

    @application.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    @application.task(name="t.boom")
    def boom() -> None:
        raise ValueError("bad", 42)

    yield application
    application.close()


async def until(pilot: Pilot[Any], what: str, check: Callable[[], bool]) -> None:
    """Let the app run until ``check()`` holds; fail naming ``what`` after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"the monitor did not show {what} within {TIMEOUT}s")
        await pilot.pause(0.02)


def test_the_monitor_shows_workers_task_rates_and_failures(app: Celeriac) -> None:
    listening = asyncio.Event()

    async def events() -> AsyncIterator[Event]:
        async with EventReceiver(app.create_transport()) as receiver:
            listening.set()
            async for event in receiver:
                yield event

    def run_tasks() -> None:
        for n in range(3):
            assert app.send_task("t.add", (n, 1)).get(timeout=TIMEOUT) == n + 1
        with contextlib.suppress(ValueError):
            app.send_task("t.boom").get(timeout=TIMEOUT)

    async def main() -> dict[str, list[list[Any]]]:
        monitor = EventsMonitor(events(), refresh=0.05)
        seen: dict[str, list[list[Any]]] = {}
        async with monitor.run_test(size=(180, 50)) as pilot:
            await until(pilot, "its listener open", listening.is_set)
            with contextlib.ExitStack() as stack:
                worker = await asyncio.to_thread(
                    stack.enter_context, worker_thread(app, send_task_events=True)
                )
                await asyncio.to_thread(run_tasks)
                name = worker.hostname
                await until(
                    pilot,
                    "the worker with its tasks processed (a heartbeat)",
                    lambda: [name, "ONLINE", "0", "4"] in [r[:4] for r in monitor.rows("workers")],
                )
                await until(pilot, "the failure", lambda: bool(monitor.rows("failures")))
                seen["tasks"] = monitor.rows("tasks")
                seen["failures"] = monitor.rows("failures")
                await asyncio.to_thread(stack.close)  # the worker stops: worker-offline
            await until(
                pilot,
                "the worker offline",
                lambda: [r[:2] for r in monitor.rows("workers")] == [[name, "OFFLINE"]],
            )
            assert "0 alive, 1 lost; 4 tasks received" in str(
                monitor.query_one("#summary").render()
            )
            await pilot.press("q")
        assert monitor.return_code == 0
        return seen

    seen = asyncio.run(main())
    tasks = {row[0]: row for row in seen["tasks"]}
    # task, received/s, succeeded/s, failed/s, received, started, succeeded, failed, retried
    assert tasks["t.add"][4:] == ["3", "3", "3", "0", "0"]
    assert tasks["t.boom"][4:] == ["1", "1", "0", "1", "0"]
    assert float(tasks["t.add"][2]) > 0  # a rate over the last seconds
    [failure] = seen["failures"]
    assert failure[1] == "t.boom"
    assert failure[4] == "ValueError('bad', 42)"


def test_the_monitor_says_why_its_stream_ended() -> None:
    async def broken() -> AsyncIterator[Event]:
        yield {"type": "worker-online", "hostname": "w@h", "local_received": time.time()}
        raise ConnectionError("broker went away")

    async def main() -> str:
        monitor = EventsMonitor(broken(), refresh=0.05)
        async with monitor.run_test() as pilot:
            await until(pilot, "the error", lambda: monitor.stream_error is not None)
            await until(pilot, "a redraw", lambda: "broker went away" in _summary(monitor))
            return _summary(monitor)

    assert "ConnectionError: broker went away" in asyncio.run(main())


def test_a_refresh_after_the_screen_is_gone_does_nothing() -> None:
    """The refresh timer can tick while the app closes, after its screen was removed: that
    tick draws nothing and raises nothing (it raised ``NoMatches`` from the timer, which made
    a test fail now and then as ``run_test`` exited)."""

    async def main() -> tuple[int, int]:
        monitor = EventsMonitor(_stream(), refresh=60)
        async with monitor.run_test() as pilot:
            await until(pilot, "the first draw", lambda: monitor.redraws > 0)
        before = monitor.redraws
        monitor.redraw()
        return before, monitor.redraws

    before, after = asyncio.run(main())
    assert after == before


async def _stream() -> AsyncIterator[Event]:
    yield {"type": "worker-online", "hostname": "w@h", "local_received": time.time()}


def _summary(monitor: EventsMonitor) -> str:
    return str(monitor.query_one("#summary").render())
