"""Is memory flat? The slope of a metric against tasks done over the second half of the run.

Slopes are per tasks rather than per second: a leak is a cost per task, and the rate varies on a
loaded machine. The window is the second half by tasks done (``done >= total / 2``) while the
worker is still busy (``done < total``), so start-up, warm-up (the first result keys living out
their ``result_expires``, pools and caches filling) and the idle tail are all left out. Least
squares over every sample in the window, so a single step (an arena grown once) weighs as
little as it should.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PER = 100_000
"""Slopes are in MiB per this many tasks."""


@dataclass(frozen=True)
class Verdict:
    metric: str
    slope: float  # MiB per PER tasks
    limit: float
    samples: int

    @property
    def flat(self) -> bool:
        return self.samples >= 2 and self.slope <= self.limit

    def line(self) -> str:
        state = "PASS" if self.flat else "FAIL"
        return (
            f"{state} {self.metric}: {self.slope:+.3f} MiB per {PER:,} tasks over the second half "
            f"({self.samples} samples; limit {self.limit:.2f})"
        )


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` on ``xs`` (0 when ``xs`` do not vary)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def second_half(done: Sequence[int], total: int) -> list[int]:
    """Indexes of the samples in the window: second half by tasks, worker still busy."""
    return [i for i, d in enumerate(done) if total / 2 <= d < total]


def verdict(
    metric: str, done: Sequence[int], values: Sequence[float], total: int, limit: float
) -> Verdict:
    window = second_half(done, total)
    xs = [done[i] / PER for i in window]
    ys = [values[i] for i in window]
    return Verdict(metric, slope(xs, ys), limit, len(window))
