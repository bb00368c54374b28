"""A small SVG line chart: panels stacked over one time axis, written without a plotting library.

celeriac's venv has no matplotlib and the soak should not need one; this draws what the README
needs (lines, axes with round ticks, a legend, vertical markers) and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH = 900
PANEL_HEIGHT = 190
LEFT, RIGHT, TOP, GAP, BOTTOM = 70, 20, 64, 40, 40


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: Sequence[float]


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    series: Sequence[Series]
    from_zero: bool = True


@dataclass(frozen=True)
class Marker:
    """A vertical dashed line across every panel at time ``t``."""

    t: float
    label: str


@dataclass
class Chart:
    title: str
    times: Sequence[float]
    panels: list[Panel] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering ``low..high`` (1, 2 or 5 times a power of ten apart)."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    value = math.floor(low / step) * step
    out = [round(value, 10)]
    while value < high - step * 1e-9:  # the last tick at or above ``high``
        value += step
        out.append(round(value, 10))
    return out


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.1f}"


def render(chart: Chart) -> str:
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + len(chart.panels) * (PANEL_HEIGHT + GAP) + BOTTOM - GAP
    t_max = max(chart.times, default=1.0) or 1.0  # the axis ends with the data
    t_ticks = [t for t in ticks(0.0, t_max, 8) if t <= t_max]

    def x(t: float) -> float:
        return LEFT + plot_w * t / t_max

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">'
        f"{escape(chart.title)}</text>",
    ]
    for index, panel in enumerate(chart.panels):
        top = TOP + index * (PANEL_HEIGHT + GAP)
        bottom = top + PANEL_HEIGHT
        values = [v for s in panel.series for v in s.values]
        low = 0.0 if panel.from_zero else min(values, default=0.0)
        y_ticks = ticks(low, max(values, default=1.0) * 1.05, 5)
        y_low, y_high = y_ticks[0], y_ticks[-1]

        def y(v: float, top: int = top, y_low: float = y_low, y_high: float = y_high) -> float:
            return top + PANEL_HEIGHT * (1 - (v - y_low) / ((y_high - y_low) or 1.0))

        out.append(
            f'<text x="{LEFT}" y="{top - 8}" font-weight="bold">{escape(panel.title)}</text>'
        )
        for value in y_ticks:
            out.append(
                f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                'stroke="#e5e5e5"/>'
                f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                f"{_fmt(value)}</text>"
            )
        for value in t_ticks:
            out.append(
                f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top}" y2="{bottom}" '
                'stroke="#f0f0f0"/>'
            )
            if index == len(chart.panels) - 1:
                out.append(
                    f'<text x="{x(value):.1f}" y="{bottom + 15}" text-anchor="middle">'
                    f"{_fmt(value)}</text>"
                )
        out.append(
            f'<text x="16" y="{(top + bottom) / 2}" text-anchor="middle" '
            f'transform="rotate(-90 16 {(top + bottom) / 2})">{escape(panel.unit)}</text>'
            f'<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" '
            'stroke="#888"/>'
        )
        for number, series in enumerate(panel.series):
            points = " ".join(
                f"{x(t):.1f},{y(v):.1f}" for t, v in zip(chart.times, series.values, strict=True)
            )
            out.append(
                f'<polyline points="{points}" fill="none" stroke="{series.color}" '
                'stroke-width="1.5"/>'
            )
            legend_x = LEFT + plot_w - 170 * (len(panel.series) - number)
            out.append(
                f'<line x1="{legend_x + 10}" x2="{legend_x + 30}" y1="{top - 12}" '
                f'y2="{top - 12}" stroke="{series.color}" stroke-width="3"/>'
                f'<text x="{legend_x + 34}" y="{top - 8}">{escape(series.label)}</text>'
            )
        for marker in chart.markers:
            out.append(
                f'<line x1="{x(marker.t):.1f}" x2="{x(marker.t):.1f}" y1="{top}" y2="{bottom}" '
                'stroke="#555" stroke-dasharray="4 3"/>'
            )
            if index == 0:  # labelled once, inside the plot whichever side it is on
                right = x(marker.t) > LEFT + plot_w * 0.85
                out.append(
                    f'<text x="{x(marker.t) + (-3 if right else 3):.1f}" y="{top + 12}" '
                    f'fill="#555" text-anchor="{"end" if right else "start"}">'
                    f"{escape(marker.label)}</text>"
                )
    last = TOP + len(chart.panels) * (PANEL_HEIGHT + GAP) - GAP
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{last + 32}" text-anchor="middle">'
        "seconds since the worker started</text></svg>"
    )
    return "\n".join(out) + "\n"
