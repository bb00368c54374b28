"""Is memory flat? The slope of a metric against tasks done over the second half of the run.

Slopes are per tasks rather than per second: a leak is a cost per task, and the rate varies on a
loaded machine. The window is the second half by tasks done (``done >= total / 2``) while the
producer still keeps the queue full (``sent < total``), so start-up, warm-up (the first result
keys living out their ``result_expires``, pools and caches filling), the final drain of the queue
(Redis shrinking by the backlog, which would hide a leak) and the idle tail are all left out.
Least squares over every sample in the window, so a single step (an arena grown once) weighs as
little as it should.

Redis' memory follows what it holds *now*: the live result keys (the rate times
``result_expires``: on a machine whose load drops, the rate and so the keys rise) and the
backlog. Its verdict is therefore the slope against tasks done with those two held constant (a
multiple regression on done, keys and pending): what is left growing per task is a leak; the
plain slope is reported beside it.
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
    note: str = ""

    @property
    def flat(self) -> bool:
        return self.samples >= 2 and self.slope <= self.limit

    def line(self) -> str:
        if self.samples < 2:  # a run too short for its queue bound: nothing to judge
            return f"FAIL {self.metric}: no window to judge (the queue never stayed full past half)"
        state = "PASS" if self.flat else "FAIL"
        return (
            f"{state} {self.metric}: {self.slope:+.3f} MiB per {PER:,} tasks over the second half"
            f"{self.note} ({self.samples} samples; limit {self.limit:.2f})"
        )


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ``ys`` on ``xs`` (0 when ``xs`` do not vary)."""
    return fit(ys, [xs])[0]


def fit(ys: Sequence[float], columns: Sequence[Sequence[float]]) -> list[float]:
    """Least-squares coefficients of ``ys`` on ``columns`` (with an intercept, not returned),
    by the normal equations on centred data; a column that does not vary gets 0."""
    n, k = len(ys), len(columns)
    if n < 2 or k == 0:
        return [0.0] * k
    means = [sum(c) / n for c in columns]
    centred = [[v - m for v in c] for c, m in zip(columns, means, strict=True)]
    my = sum(ys) / n
    yc = [y - my for y in ys]
    a = [[sum(p * q for p, q in zip(ci, cj, strict=True)) for cj in centred] for ci in centred]
    b = [sum(p * q for p, q in zip(ci, yc, strict=True)) for ci in centred]
    live = [i for i in range(k) if a[i][i] > 1e-12]
    a = [[a[i][j] for j in live] for i in live]
    b = [b[i] for i in live]
    for col in range(len(live)):  # Gaussian elimination, partial pivoting
        pivot = max(range(col, len(live)), key=lambda r: abs(a[r][col]))
        a[col], a[pivot], b[col], b[pivot] = a[pivot], a[col], b[pivot], b[col]
        if abs(a[col][col]) < 1e-12:
            continue
        for row in range(col + 1, len(live)):
            factor = a[row][col] / a[col][col]
            a[row] = [x - factor * y for x, y in zip(a[row], a[col], strict=True)]
            b[row] -= factor * b[col]
    solved = [0.0] * len(live)
    for row in reversed(range(len(live))):
        if abs(a[row][row]) < 1e-12:
            continue
        rest = sum(a[row][j] * solved[j] for j in range(row + 1, len(live)))
        solved[row] = (b[row] - rest) / a[row][row]
    out = [0.0] * k
    for index, value in zip(live, solved, strict=True):
        out[index] = value
    return out


def second_half(done: Sequence[int], sent: Sequence[int], total: int) -> list[int]:
    """Indexes of the samples in the window: second half by tasks, queue still kept full."""
    return [
        i
        for i, (d, s) in enumerate(zip(done, sent, strict=True))
        if d >= total / 2 > 0 and s < total
    ]


def verdict(
    metric: str,
    done: Sequence[int],
    sent: Sequence[int],
    values: Sequence[float],
    total: int,
    limit: float,
    held: Sequence[Sequence[float]] = (),
    note: str = "",
) -> Verdict:
    """The slope of ``values`` per :data:`PER` tasks in the window, the ``held`` series (live
    keys, backlog) held constant when given."""
    window = second_half(done, sent, total)
    xs = [done[i] / PER for i in window]
    ys = [values[i] for i in window]
    controls = [[series[i] for i in window] for series in held]
    return Verdict(metric, fit(ys, [xs, *controls])[0], limit, len(window), note)
