"""Events per second per key over a sliding window: what a monitor shows as "task rates".

Counts go into one-second buckets; a rate is the count over the last ``window`` seconds divided
by the window (or by the time since the first count, while that is shorter), so a monitor
started a moment ago does not show a tenth of the real rate. Memory is ``window`` buckets per
key; keys idle for a whole window are forgotten.
"""

from __future__ import annotations

import time
from collections import deque


class RateMeter:
    """Counts per key in one-second buckets over the last ``window`` seconds."""

    def __init__(self, window: int = 10) -> None:
        self.window = window
        self._buckets: dict[str, deque[tuple[int, int]]] = {}
        self._first: float | None = None

    def add(self, key: str, now: float | None = None, count: int = 1) -> None:
        at = time.time() if now is None else now
        if self._first is None:
            self._first = at
        second = int(at)
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = self._buckets[key] = deque()
        if buckets and buckets[-1][0] == second:
            buckets[-1] = (second, buckets[-1][1] + count)
        else:
            buckets.append((second, count))
            while buckets and buckets[0][0] <= second - self.window:
                buckets.popleft()

    def rate(self, key: str, now: float | None = None) -> float:
        """Events of ``key`` per second over the window ending ``now``."""
        at = time.time() if now is None else now
        buckets = self._buckets.get(key)
        if not buckets or self._first is None:
            return 0.0
        since = int(at) - self.window
        total = sum(count for second, count in buckets if second > since)
        span = min(float(self.window), max(1.0, at - self._first))
        return total / span

    def rates(self, now: float | None = None) -> dict[str, float]:
        """Every key's rate (keys idle for the whole window are dropped)."""
        at = time.time() if now is None else now
        out: dict[str, float] = {}
        for key in list(self._buckets):
            value = self.rate(key, at)
            if value > 0:
                out[key] = value
            elif self._buckets[key] and self._buckets[key][-1][0] <= int(at) - self.window:
                del self._buckets[key]
        return out
