"""Inline SVG charts as plain geometry: the templates draw what these functions lay out.

Nothing here emits markup, so every label reaches the page through the template's escaping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10 * magnitude


def _ticks(low: float, high: float, left: float, width: float, target: int = 5) -> list[Tick]:
    step = _nice_step(high - low, target)
    first = math.ceil(low / step - 1e-9) * step
    ticks: list[Tick] = []
    value = first
    while value <= high + 1e-9:
        x = left + (value - low) / (high - low) * width
        ticks.append(Tick(round(x, 1), f"{value:.4g}"))
        value += step
    return ticks


@dataclass(frozen=True)
class ForestRow:
    """One estimate: a label, the value, its 95% interval (when known) and where the label links."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    href: str | None = None
    group: bool = False
    n: int | None = None
    tone: str = ""


@dataclass
class PlacedRow:
    row: ForestRow
    y: float
    x: float
    x_low: float | None
    x_high: float | None


@dataclass
class ForestChart:
    width: int
    height: int
    plot_left: int
    plot_width: int
    rows: list[PlacedRow]
    ticks: list[Tick]
    zero_x: float | None = None
    axis_y: float = 0.0


ROW_HEIGHT = 22
LABEL_WIDTH = 250
VALUE_WIDTH = 150


def forest_plot(
    rows: Sequence[ForestRow], *, width: int = 860, centre_zero: bool = False
) -> ForestChart | None:
    """Estimates with their intervals on one shared axis (a proportion axis when all lie in [0, 1])."""
    if not rows:
        return None
    values = [v for r in rows for v in (r.value, r.low, r.high) if v is not None and math.isfinite(v)]
    low, high = min(values), max(values)
    if not centre_zero and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    else:
        if centre_zero:
            bound = max(abs(low), abs(high)) or 1.0
            low, high = -bound, bound
        pad = (high - low) * 0.05 or 0.5
        low, high = low - pad, high + pad
    plot_left, plot_width = LABEL_WIDTH, width - LABEL_WIDTH - VALUE_WIDTH
    top = 8

    def scale(value: float) -> float:
        return round(plot_left + (value - low) / (high - low) * plot_width, 1)

    placed = [
        PlacedRow(
            row=r,
            y=top + i * ROW_HEIGHT + ROW_HEIGHT / 2,
            x=scale(r.value),
            x_low=scale(r.low) if r.low is not None else None,
            x_high=scale(r.high) if r.high is not None else None,
        )
        for i, r in enumerate(rows)
    ]
    axis_y = top + len(rows) * ROW_HEIGHT + 4
    return ForestChart(
        width=width,
        height=int(axis_y + 24),
        plot_left=plot_left,
        plot_width=plot_width,
        rows=placed,
        ticks=_ticks(low, high, plot_left, plot_width),
        zero_x=scale(0.0) if low < 0 < high else None,
        axis_y=axis_y,
    )


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    low: float
    high: float


@dataclass
class Histogram:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[Tick]
    axis_y: float
    max_count: int
    extra: dict[str, Any] = field(default_factory=dict)


def histogram(
    low: float, high: float, counts: Sequence[int], *, width: int = 420, height: int = 150
) -> Histogram:
    """Bars of equal-width bins from ``low`` to ``high``."""
    left, right, top, bottom = 36, 12, 8, 22
    plot_width, plot_height = width - left - right, height - top - bottom
    peak = max(counts) if counts else 0
    bins = len(counts)
    span = (high - low) or 1.0
    bars = []
    for i, count in enumerate(counts):
        bar_height = plot_height * count / peak if peak else 0
        bars.append(
            Bar(
                x=round(left + i * plot_width / bins + 1, 1),
                y=round(top + plot_height - bar_height, 1),
                width=round(max(plot_width / bins - 2, 1), 1),
                height=round(bar_height, 1),
                count=count,
                low=low + i * span / bins,
                high=low + (i + 1) * span / bins,
            )
        )
    return Histogram(
        width=width,
        height=height,
        bars=bars,
        ticks=_ticks(low, low + span, left, plot_width, 4),
        axis_y=top + plot_height,
        max_count=peak,
    )


@dataclass
class StepChart:
    width: int
    height: int
    points: str
    max_value: float
    max_time: float


def step_chart(history: Sequence[Sequence[Any]], *, width: int = 420, height: int = 110) -> StepChart | None:
    """A step line of ``[elapsed_s, value, ...]`` entries (the concurrency history)."""
    entries = [(float(e[0]), float(e[1])) for e in history if len(e) >= 2]
    if not entries:
        return None
    left, top, bottom, right = 36, 8, 20, 8
    max_time = max(t for t, _ in entries) or 1.0
    max_value = max(v for _, v in entries) or 1.0
    plot_width, plot_height = width - left - right, height - top - bottom

    def xy(t: float, v: float) -> str:
        return f"{left + t / max_time * plot_width:.1f},{top + plot_height - v / max_value * plot_height:.1f}"

    points: list[str] = []
    previous: float | None = None
    for t, v in entries:
        if previous is not None:
            points.append(xy(t, previous))
        points.append(xy(t, v))
        previous = v
    points.append(xy(max_time, entries[-1][1]))
    return StepChart(width, height, " ".join(points), max_value, max_time)
