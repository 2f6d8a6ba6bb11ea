"""Bar charts as inline SVG, written by hand (no plotting library).

One horizontal bar per format x precision, with an optional min-max whisker and a reference
line (1.0x eager for latency ratios). The chart is a picture of numbers that the page also
prints in a table; it carries ``role="img"`` and an ``aria-label`` saying what it shows. Every
coordinate is printed with fixed decimals, so the same numbers give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from zoo.site.html import esc

WIDTH = 600
LABEL_W = 150
VALUE_W = 110
ROW_H = 22
TOP = 40
BOTTOM = 24


@dataclass(frozen=True)
class Bar:
    """One bar: its label, the value, and an optional [low, high] whisker."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    text: str = ""  # the value as printed beside the bar (default: the value, 2 decimals)


def _nice(top: float) -> float:
    """A round axis end at or above ``top`` (1, 2, 2.5 or 5 times a power of ten)."""
    if top <= 0 or not math.isfinite(top):
        return 1.0
    power = 10 ** math.floor(math.log10(top))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= top:
            return step * power
    return 10 * power


def _f(x: float) -> str:
    return f"{x:.1f}"


def bar_chart(title: str, bars: Sequence[Bar], *, unit: str = "",
              reference: float | None = None, reference_label: str = "") -> str:
    """An SVG bar chart (markup); ``title``, labels and unit are escaped."""
    if not bars:
        return ""
    top = max([b.high if b.high is not None else b.value for b in bars] +
              ([reference] if reference is not None else []))
    axis_end = _nice(top)
    plot_w = WIDTH - LABEL_W - VALUE_W
    height = TOP + ROW_H * len(bars) + BOTTOM

    def x(value: float) -> float:
        return LABEL_W + plot_w * max(0.0, min(value, axis_end)) / axis_end

    summary = "; ".join(f"{b.label}: {b.text or f'{b.value:.2f}'}{unit}" for b in bars)
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="{WIDTH}" height="{height}" role="img" aria-label="{esc(title)}: {esc(summary)}">',
        f'<text x="0" y="16" class="chart-title">{esc(title)}</text>',
    ]
    for i, b in enumerate(bars):
        y = TOP + i * ROW_H
        mid = y + ROW_H / 2
        parts.append(f'<text x="{LABEL_W - 8}" y="{_f(mid + 4)}" text-anchor="end">'
                     f"{esc(b.label)}</text>")
        parts.append(f'<rect x="{LABEL_W}" y="{_f(y + 4)}" width="{_f(x(b.value) - LABEL_W)}" '
                     f'height="{ROW_H - 8}" class="bar"/>')
        if b.low is not None and b.high is not None:
            lo, hi = x(b.low), x(b.high)
            parts.append(f'<path d="M{_f(lo)} {_f(mid)}H{_f(hi)}M{_f(lo)} {_f(mid - 5)}'
                         f'V{_f(mid + 5)}M{_f(hi)} {_f(mid - 5)}V{_f(mid + 5)}" class="whisker"/>')
        value = b.text or f"{b.value:.2f}"
        parts.append(f'<text x="{WIDTH - VALUE_W + 8}" y="{_f(mid + 4)}">'
                     f"{esc(value + unit)}</text>")
    base = TOP + ROW_H * len(bars)
    parts.append(f'<path d="M{LABEL_W} {TOP - 2}V{base}H{WIDTH - VALUE_W}" class="axis"/>')
    parts.append(f'<text x="{LABEL_W}" y="{base + 16}" text-anchor="middle">0</text>')
    parts.append(f'<text x="{WIDTH - VALUE_W}" y="{base + 16}" text-anchor="middle">'
                 f"{esc(f'{axis_end:g}{unit}')}</text>")
    if reference is not None:
        rx = _f(x(reference))
        parts.append(f'<path d="M{rx} {TOP - 4}V{base}" class="reference"/>')
        parts.append(f'<text x="{rx}" y="{TOP - 8}" text-anchor="middle" class="reference-label">'
                     f"{esc(reference_label)}</text>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
