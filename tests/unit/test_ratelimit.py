"""Rate limits: parsing, token buckets and the per-task limiter, on a hand-driven clock."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celeriac.errors import ImproperlyConfigured
from celeriac.utils.rates import parse_rate
from celeriac.worker.ratelimit import RateLimiter, TokenBucket


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/s", 10.0),
        ("100/m", 100 / 60),
        ("1000/h", 1000 / 3600),
        ("5", 5.0),
        (" 2.5 / sec ", 2.5),
        ("30/minute", 0.5),
        (7, 7.0),
        (0.5, 0.5),
        (None, None),
        ("0", None),
        ("0/m", None),
    ],
)
def test_parse_rate(text: str | float | None, expected: float | None) -> None:
    assert parse_rate(text) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("bad", ["", "ten/s", "10/d", "10/", "/s", "-1/s", "1e999", "10/s/s", -3])
def test_parse_rate_rejects_and_names_the_value(bad: str | float) -> None:
    with pytest.raises(ImproperlyConfigured, match=repr(bad).replace("/", ".")):
        parse_rate(bad)


def test_bucket_starts_full_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, capacity=3, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(0.5)
    assert bucket.try_acquire() == pytest.approx(0.5)  # asking again took nothing
    clock.advance(0.2)
    assert bucket.try_acquire() == pytest.approx(0.3)
    clock.advance(0.3)
    assert bucket.try_acquire() == 0.0
    clock.advance(100)
    assert bucket.tokens() == pytest.approx(3.0)  # never more than the capacity


def test_reserve_books_slots_in_order() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, clock=clock)
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    clock.advance(0.35)
    assert bucket.reserve() == pytest.approx(0.05)


def test_bucket_rejects_bad_parameters() -> None:
    with pytest.raises(ImproperlyConfigured, match="rate"):
        TokenBucket(0)
    with pytest.raises(ImproperlyConfigured, match="capacity"):
        TokenBucket(1.0, capacity=0.5)


def _max_in_window(times: list[float], rate: float, capacity: float) -> float:
    """The largest excess of grants over ``capacity + rate * T`` across all windows whose ends
    are grants (the busiest windows always are)."""
    worst = float("-inf")
    for i in range(len(times)):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (capacity + rate * (times[j] - times[i])))
    return worst


steps = st.lists(
    st.tuples(st.floats(0, 2.0, allow_nan=False), st.integers(1, 5)), min_size=1, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.1, 500), capacity=st.integers(1, 10), steps=steps)
def test_try_acquire_never_exceeds_capacity_plus_rate_times_window(
    rate: float, capacity: int, steps: list[tuple[float, int]]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock)
    granted: list[float] = []
    for advance, attempts in steps:
        clock.advance(advance)
        for _ in range(attempts):
            wait = bucket.try_acquire()
            if wait == 0.0:
                granted.append(clock.now)
            else:
                assert wait <= 1 / rate + 1e-9
    assert _max_in_window(granted, rate, capacity) <= 1e-6


@settings(max_examples=200, deadline=None)
@given(rate=st.floats(0.1, 500), capacity=st.integers(1, 10), steps=steps)
def test_reservations_respect_the_bound_and_waiting_them_out_succeeds(
    rate: float, capacity: int, steps: list[tuple[float, int]]
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock)
    granted: list[float] = []  # when each reservation may proceed
    for advance, attempts in steps:
        clock.advance(advance)
        granted.extend(clock.now + bucket.reserve() for _ in range(attempts))
    assert granted == sorted(granted)  # first come, first served
    assert _max_in_window(granted, rate, capacity) <= 1e-6
    # a caller who waits what try_acquire announced then gets a token
    clock.now = max(clock.now, granted[-1])
    while (wait := bucket.try_acquire()) == 0.0:
        pass  # empty the bucket
    clock.advance(wait)
    assert bucket.try_acquire() == 0.0


def test_limiter_per_task_name_changeable_at_run_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert limiter.reserve("free") == 0.0 and limiter.reserve("free") == 0.0
    assert limiter.set_rate("slow", "2/s") == 2.0
    assert limiter.reserve("slow") == 0.0
    assert limiter.reserve("slow") == pytest.approx(0.5)
    assert limiter.reserve("free") == 0.0  # one type's limit never touches another
    limiter.set_rate("slow", "2/s")  # same rate: the bucket (and its debt) stays
    assert limiter.reserve("slow") == pytest.approx(1.0)
    limiter.set_rate("slow", "60/s")  # a new rate starts full
    assert limiter.rate("slow") == 60.0
    assert limiter.reserve("slow") == 0.0
    limiter.set_rate("slow", None)
    assert limiter.rate("slow") is None
    assert [limiter.reserve("slow") for _ in range(5)] == [0.0] * 5
    with pytest.raises(ImproperlyConfigured, match="'fast'"):
        limiter.set_rate("slow", "fast")


def test_limiter_is_thread_safe() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock, capacity=100)
    limiter.set_rate("t", "1/h")
    immediate: list[int] = []
    lock = threading.Lock()

    def grab() -> None:
        got = sum(1 for _ in range(50) if limiter.reserve("t") == 0.0)
        with lock:
            immediate.append(got)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(immediate) == 100  # exactly the capacity, never more, across 8 threads


def test_acquire_waits_only_for_its_own_type() -> None:
    limiter = RateLimiter()
    limiter.set_rate("slow", "1/h")
    order: list[str] = []

    async def run(name: str) -> None:
        await limiter.acquire(name)
        order.append(name)

    async def main() -> None:
        await run("slow")  # takes the only token
        blocked = asyncio.create_task(run("slow"))
        for _ in range(20):
            await run("fast")
        assert not blocked.done()
        blocked.cancel()

    asyncio.run(main())
    assert order == ["slow"] + ["fast"] * 20
