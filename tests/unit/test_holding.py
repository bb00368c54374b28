"""The holder of the rest of a fetching child's claim (``celeriac.worker.pools.holding``): each
message taken by the main thread in order, or all given back by its own thread once held too
long, never both."""

from __future__ import annotations

import threading
import time

import pytest

from celeriac.transports.base import Delivery
from celeriac.worker.pools import fetching, holding
from celeriac.worker.pools.holding import Holder


def delivery(n: int) -> Delivery:
    return Delivery((n, 1), "q", b"payload %d" % n, 1)


class Released:
    """The holder's ``release``: records what it was handed, sets an event per call."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self.calls = 0
        self.event = threading.Event()

    def __call__(self, items: list[Delivery]) -> None:
        self.items.extend(items)
        self.calls += 1
        self.event.set()


def test_messages_taken_in_time_are_the_takers_in_order_and_never_given_back() -> None:
    released = Released()
    holder = Holder(released, limit=60)
    first, second = delivery(1), delivery(2)
    holder.hold([first, second])
    assert holder.take() is first
    assert holder.take() is second
    assert holder.take() is None
    holder.hold([delivery(3), delivery(4)])
    assert holder.take() == delivery(3)
    # still held at close: the caller gives them back
    assert holder.close() == [delivery(4)]
    assert released.items == []


def test_take_all_hands_over_what_is_held() -> None:
    holder = Holder(Released(), limit=60)
    holder.hold([delivery(1), delivery(2), delivery(3)])
    assert holder.take() == delivery(1)
    assert holder.take_all() == [delivery(2), delivery(3)]
    assert holder.take() is None and holder.take_all() == []
    holder.hold([delivery(4)])  # nothing held any more: a new claim may be held
    assert holder.close() == [delivery(4)]


class Listed:
    """A board slot's list of what is held: what ``hold`` listed, how many ``took`` took."""

    def __init__(self) -> None:
        self.listed: list[tuple[str, object]] = []
        self.taken = 0

    def hold(self, held: list[tuple[str, object]]) -> bool:
        self.listed, self.taken = held, 0
        return True

    def took(self, count: int) -> None:
        self.taken = count

    def left(self) -> list[tuple[str, object]]:
        return self.listed[self.taken :]


def test_the_board_lists_what_is_held_and_not_taken() -> None:
    """The worker gives back what a dead child's slot lists: a message taken (to run or to
    give back) leaves the list before the taker has it."""
    board = Listed()
    released = Released()
    holder = Holder(released, limit=60, board=board)
    holder.hold([delivery(1), delivery(2), delivery(3)])
    assert board.left() == [("q", (1, 1)), ("q", (2, 1)), ("q", (3, 1))]
    assert holder.take() == delivery(1)
    assert board.left() == [("q", (2, 1)), ("q", (3, 1))]
    assert holder.take_all() == [delivery(2), delivery(3)]
    assert board.left() == []
    holder.hold([delivery(4), delivery(5)])
    assert board.left() == [("q", (4, 1)), ("q", (5, 1))]
    assert holder.close() == [delivery(4), delivery(5)]
    assert board.left() == []


def test_what_is_given_back_for_lasting_too_long_leaves_the_board_list() -> None:
    board = Listed()
    released = Released()
    holder = Holder(released, limit=0.02, tick=0.005, board=board)
    holder.hold([delivery(1), delivery(2)])
    assert released.event.wait(5)
    assert released.items == [delivery(1), delivery(2)]
    assert board.left() == []
    holder.close()


def test_messages_held_past_the_limit_are_given_back_together_once() -> None:
    released = Released()
    holder = Holder(released, limit=0.02, tick=0.005)
    started = time.monotonic()
    holder.hold([delivery(1), delivery(2), delivery(3)])
    assert holder.take() == delivery(1)
    assert released.event.wait(5)
    waited = time.monotonic() - started
    assert released.items == [delivery(2), delivery(3)]
    assert released.calls == 1  # one give-back for the lot
    assert waited >= 0.02
    assert holder.take() is None  # back in their queue: the main thread must not run them
    assert holder.released == 2
    assert holder.close() == []


def test_one_claim_is_held_at_a_time() -> None:
    holder = Holder(Released(), limit=60)
    holder.hold([delivery(1), delivery(2)])
    assert holder.take() == delivery(1)
    with pytest.raises(RuntimeError):
        holder.hold([delivery(3)])
    holder.close()


def test_a_parked_watcher_wakes_for_the_next_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing held for a while the thread waits without a timeout; a hold wakes it."""
    monkeypatch.setattr(holding, "PARK_AFTER", 0.01)
    released = Released()
    holder = Holder(released, limit=0.02, tick=0.005)
    holder.hold([delivery(1)])
    assert holder.take() == delivery(1)
    deadline = time.monotonic() + 5
    while not holder._parked:
        assert time.monotonic() < deadline, "the watcher did not park"
        time.sleep(0.005)
    holder.hold([delivery(2)])
    assert released.event.wait(5)
    assert released.items == [delivery(2)]
    holder.close()


def test_close_stops_the_thread() -> None:
    holder = Holder(Released(), limit=60)
    holder.hold([delivery(1)])
    thread = holder._thread
    assert thread is not None and thread.is_alive()
    holder.close()
    assert not thread.is_alive()


def test_a_failing_release_is_logged_and_the_watcher_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[list[Delivery]] = []
    second = threading.Event()

    def release(items: list[Delivery]) -> None:
        calls.append(items)
        if len(calls) == 1:
            raise ConnectionError("Redis went away")
        second.set()

    holder = Holder(release, limit=0.01, tick=0.005)
    holder.hold([delivery(1)])
    deadline = time.monotonic() + 5
    while holder.released < 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    holder.hold([delivery(2)])
    assert second.wait(5)
    assert calls == [[delivery(1)], [delivery(2)]]
    assert "giving back held messages failed" in caplog.text
    holder.close()


@pytest.mark.parametrize(
    ("ready_left", "last_run", "size"),
    [
        (False, 0.0001, 1),  # the last claim emptied the queue: one at a time
        (True, 0.0, 16),  # nothing run yet: the most a claim takes
        (True, 0.0001, 16),  # no-op tasks
        (True, 0.003, 4),  # the last held waits 9 ms of a 20 ms limit
        (True, 0.004, 3),
        (True, 0.009, 2),
        (True, 0.01, 1),  # tasks that last (PAIR_UNDER) gain nothing from a batch
        (True, 0.5, 1),
    ],
)
def test_a_claims_size_keeps_the_last_held_waiting_about_half_the_hold_limit(
    ready_left: bool, last_run: float, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the defaults the figures above are for (a prefork test app in this process may have set
    # the limits its children read)
    monkeypatch.setattr(holding, "HOLD_LIMIT", 0.02)
    monkeypatch.setattr(fetching, "PAIR_UNDER", 0.01)
    monkeypatch.setattr(fetching, "CLAIM_MOST", 16)
    assert fetching.claim_size(ready_left, last_run) == size
