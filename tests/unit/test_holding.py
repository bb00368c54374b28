"""The holder of a fetching child's second message (``celeriac.worker.pools.holding``): taken
by the main thread, or given back by its own thread once held too long, never both."""

from __future__ import annotations

import threading
import time

import pytest

from celeriac.transports.base import Delivery
from celeriac.worker.pools import holding
from celeriac.worker.pools.holding import Holder


def delivery(n: int) -> Delivery:
    return Delivery((n, 1), "q", b"payload %d" % n, 1)


class Released:
    """The holder's ``release``: records what it was handed, sets an event per call."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self.event = threading.Event()

    def __call__(self, item: Delivery) -> None:
        self.items.append(item)
        self.event.set()


def test_a_message_taken_in_time_is_the_takers_and_never_given_back() -> None:
    released = Released()
    holder = Holder(released, limit=60)
    first = delivery(1)
    holder.hold(first)
    assert holder.take() is first
    assert holder.take() is None
    holder.hold(delivery(2))
    assert holder.close() == delivery(2)  # still held at close: the caller gives it back
    assert released.items == []


def test_a_message_held_past_the_limit_is_given_back_once() -> None:
    released = Released()
    holder = Holder(released, limit=0.02, tick=0.005)
    started = time.monotonic()
    holder.hold(delivery(1))
    assert released.event.wait(5)
    waited = time.monotonic() - started
    assert released.items == [delivery(1)]
    assert waited >= 0.02
    assert holder.take() is None  # back in its queue: the main thread must not run it
    assert holder.released == 1
    assert holder.close() is None


def test_only_one_message_is_held_at_a_time() -> None:
    holder = Holder(Released(), limit=60)
    holder.hold(delivery(1))
    with pytest.raises(RuntimeError):
        holder.hold(delivery(2))
    holder.close()


def test_a_parked_watcher_wakes_for_the_next_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing held for a while the thread waits without a timeout; a hold wakes it."""
    monkeypatch.setattr(holding, "PARK_AFTER", 0.01)
    released = Released()
    holder = Holder(released, limit=0.02, tick=0.005)
    holder.hold(delivery(1))
    assert holder.take() == delivery(1)
    deadline = time.monotonic() + 5
    while not holder._parked:
        assert time.monotonic() < deadline, "the watcher did not park"
        time.sleep(0.005)
    holder.hold(delivery(2))
    assert released.event.wait(5)
    assert released.items == [delivery(2)]
    holder.close()


def test_close_stops_the_thread() -> None:
    holder = Holder(Released(), limit=60)
    holder.hold(delivery(1))
    thread = holder._thread
    assert thread is not None and thread.is_alive()
    holder.close()
    assert not thread.is_alive()


def test_a_failing_release_is_logged_and_the_watcher_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[Delivery] = []
    second = threading.Event()

    def release(item: Delivery) -> None:
        calls.append(item)
        if len(calls) == 1:
            raise ConnectionError("Redis went away")
        second.set()

    holder = Holder(release, limit=0.01, tick=0.005)
    holder.hold(delivery(1))
    deadline = time.monotonic() + 5
    while holder.released < 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    holder.hold(delivery(2))
    assert second.wait(5)
    assert calls == [delivery(1), delivery(2)]
    assert "giving back a held message failed" in caplog.text
    holder.close()
