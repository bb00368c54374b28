"""Per-task-type rate limits: ``rate_limit="10/s"`` on a task, enforced by each worker.

The limit is Celery's: per worker, per task name, a token bucket that refills at the rate and
holds ``capacity`` tokens (1 by default, as Celery's, so tasks are spaced evenly rather than let
through in bursts; give a larger capacity to allow bursts). Over any window of ``T`` seconds a
bucket lets through at most ``capacity + rate * T`` tasks.

A limited task type waits on its own: :meth:`RateLimiter.acquire` sleeps only the coroutine that
asked, so a slow type never holds back the others. Time is read from an injectable clock
(``time.monotonic`` by default) so tests can move it by hand instead of sleeping.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable

from celeriac.errors import ImproperlyConfigured
from celeriac.utils.rates import parse_rate

Clock = Callable[[], float]

#: Float slack when comparing token counts, so waiting exactly the announced time always succeeds.
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up; starts full. Thread-safe."""

    def __init__(
        self, rate: float, capacity: float | None = None, clock: Clock = time.monotonic
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ImproperlyConfigured(f"token bucket rate must be > 0, not {rate!r}")
        capacity = 1.0 if capacity is None else float(capacity)
        if not (math.isfinite(capacity) and capacity >= 1):
            raise ImproperlyConfigured(f"token bucket capacity must be >= 1, not {capacity!r}")
        self.rate = float(rate)
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._last)  # an injected clock may step back: never refund
        self._last = max(self._last, now)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        return self._tokens

    def try_acquire(self) -> float:
        """Take a token if one is there: 0.0; else take nothing and return the seconds until one
        will be. Never blocks."""
        with self._lock:
            tokens = self._refill()
            if tokens >= 1.0 - _EPSILON:
                self._tokens = tokens - 1.0
                return 0.0
            return (1.0 - tokens) / self.rate

    def reserve(self) -> float:
        """Take a token now, borrowing it from the future if need be: returns the seconds the
        caller must wait before it may proceed (0.0 if at once). Callers are served in the order
        they reserve, and waiting exactly that long never lets more through than the rate."""
        with self._lock:
            tokens = self._refill() - 1.0
            self._tokens = tokens
            return 0.0 if tokens >= -_EPSILON else -tokens / self.rate

    def tokens(self) -> float:
        """Tokens available now (negative when reservations are outstanding)."""
        with self._lock:
            return self._refill()


class RateLimiter:
    """One token bucket per task name; names without a rate are never limited. Thread-safe.

    ``set_rate`` may be called at any time (a remote ``rate_limit`` command): a new rate starts
    with a full bucket, as in Celery, and ``None`` removes the limit.
    """

    def __init__(self, clock: Clock = time.monotonic, capacity: float | None = None) -> None:
        self._clock = clock
        self._capacity = capacity
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def set_rate(self, name: str, rate: str | float | None) -> float | None:
        """Limit ``name`` to ``rate`` (see :func:`parse_rate`); returns tokens per second."""
        per_second = parse_rate(rate)
        with self._lock:
            if per_second is None:
                self._buckets.pop(name, None)
                return None
            current = self._buckets.get(name)
            if current is None or current.rate != per_second:
                self._buckets[name] = TokenBucket(per_second, self._capacity, self._clock)
        return per_second

    def limited(self) -> frozenset[str]:
        """The names that have a rate."""
        with self._lock:
            return frozenset(self._buckets)

    def rate(self, name: str) -> float | None:
        """The limit of ``name`` in tokens per second, or None."""
        bucket = self._buckets.get(name)
        return None if bucket is None else bucket.rate

    def reserve(self, name: str) -> float:
        """Book the next slot for one ``name`` task: 0.0 to run now, else the seconds to wait
        first (the slot is taken either way; see :meth:`TokenBucket.reserve`)."""
        bucket = self._buckets.get(name)
        return 0.0 if bucket is None else bucket.reserve()

    async def acquire(self, name: str) -> None:
        """Wait until one ``name`` task may run; only this coroutine waits."""
        delay = self.reserve(name)
        if delay > 0:
            await asyncio.sleep(delay)
