"""The overview's charts as inline SVG drawn on the server: no chart library, no build step,
nothing for the Content-Security-Policy to allow (SVG attributes, not ``style``; colours come
from the stylesheet's classes).

:func:`bars` stacks counts per minute (succeeded over failed); :func:`lines` draws one or more
series of seconds per minute (sent->started wait, runtime) with gaps where a minute had none.
Both return markup safe to insert as it is: every number is formatted here and every label is
escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD = 600, 140, 28


def _scale(top: float) -> float:
    """A round maximum for the axis at or above ``top``."""
    if top <= 0:
        return 1.0
    step = 1.0
    while step * 10 < top:
        step *= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= top:
            return step * factor
    return top


def _axis(top: float, unit: str) -> str:
    label = f"{top:g}{unit}"
    return (
        f'<line class="axis" x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH}" y2="{HEIGHT - PAD}"/>'
        f'<text class="tick" x="2" y="12">{escape(label)}</text>'
        f'<text class="tick" x="2" y="{HEIGHT - PAD}">0</text>'
    )


def bars(
    title: str, stacks: Sequence[Sequence[float]], classes: Sequence[str], legend: Sequence[str]
) -> str:
    """Stacked bars: ``stacks[i]`` is the values of minute ``i``, bottom first."""
    count = max(len(stacks), 1)
    top = _scale(max((sum(s) for s in stacks), default=0.0))
    width = (WIDTH - PAD) / count
    plot = HEIGHT - 2 * PAD
    parts = [_axis(top, "")]
    for i, values in enumerate(stacks):
        y = float(HEIGHT - PAD)
        for value, css in zip(values, classes, strict=False):
            if value <= 0:
                continue
            h = plot * value / top
            y -= h
            x = PAD + i * width
            parts.append(
                f'<rect class="{css}" x="{x:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}"'
                f' height="{h:.1f}"><title>{value:g}</title></rect>'
            )
    return _figure(title, parts, classes, legend)


def lines(
    title: str,
    series: Sequence[Sequence[float | None]],
    classes: Sequence[str],
    legend: Sequence[str],
    unit: str = "s",
) -> str:
    """One polyline per series; None values break the line."""
    values = [v for s in series for v in s if v is not None]
    top = _scale(max(values, default=0.0))
    count = max((len(s) for s in series), default=1)
    step = (WIDTH - PAD) / max(count - 1, 1)
    plot = HEIGHT - 2 * PAD
    parts = [_axis(top, unit)]
    for points, css in zip(series, classes, strict=False):
        run: list[str] = []
        for i, value in enumerate([*points, None]):
            if value is None:
                if len(run) == 1:
                    cx, cy = run[0].split(",")
                    parts.append(f'<circle class="{css}" cx="{cx}" cy="{cy}" r="2"/>')
                elif run:
                    parts.append(f'<polyline class="{css}" points="{" ".join(run)}"/>')
                run = []
                continue
            x = PAD + i * step
            y = HEIGHT - PAD - plot * value / top
            run.append(f"{x:.1f},{y:.1f}")
    return _figure(title, parts, classes, legend)


def _figure(title: str, parts: list[str], classes: Sequence[str], legend: Sequence[str]) -> str:
    keys = "".join(
        f'<span class="key {css}">{escape(name)}</span>'
        for css, name in zip(classes, legend, strict=False)
    )
    return (
        f'<figure class="chart"><figcaption>{escape(title)} {keys}</figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        + "".join(parts)
        + "</svg></figure>"
    )
