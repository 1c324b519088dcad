"""The report's charts as inline SVG, drawn here: no script, font or stylesheet to fetch.

Each chart draws one `Series` per model, in the model's one colour in every chart: its latency distribution,
its results over time with those that got a 429 or were retried marked, its cost. Each chart is as wide as the
page (its SVG scales to the width, drawn on a fixed grid), has round tick values (axes.py), and a legend of
only what it draws.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from llmgather.report.axes import Axis, axis_for
from llmgather.report.results import ModelSummary, Timeline

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
RATE_LIMITED_COLOR = "#d62728"
RETRIED_COLOR = "#7f7f7f"
WIDTH, HEIGHT = 960, 300
"""The grid charts are drawn on; the page scales it to its width."""
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 48
MARKS_PER_MODEL = 400  # enough to see where 429s and retries cluster, small enough to keep the file light
_CRISP = 'shape-rendering="crispEdges" vector-effect="non-scaling-stroke"'  # one sharp pixel at any scale
LATENCY_BINS = 30
"""About this many bins, a whole number of them between two ticks."""


@dataclass(slots=True)
class Series:
    model: str
    color: str
    timeline: Timeline
    cost_usd: float
    priced: bool = True


def series_of(models: Sequence[ModelSummary]) -> list[Series]:
    """One series per model, each in its own colour; the models must have been read with timelines."""
    return [
        Series(m.model, COLORS[i % len(COLORS)], m.timeline or Timeline(), m.cost_usd, m.priced)
        for i, m in enumerate(models)
    ]


def latency_chart(series: Sequence[Series]) -> str:
    """A histogram per model over shared bins, drawn as steps so that the models overlay."""
    drawn = [s for s in series if s.timeline.latencies]
    if not drawn:
        return "<p>No latencies: nothing was answered by a provider.</p>"
    x = axis_for(max(max(s.timeline.latencies) for s in drawn))
    bins = x.intervals * max(1, round(LATENCY_BINS / x.intervals))
    counts = {s.model: [0] * bins for s in drawn}
    for s in drawn:
        for value in s.timeline.latencies:
            counts[s.model][min(bins - 1, int(value / x.top * bins))] += 1
    y = axis_for(max(max(c) for c in counts.values()), whole=True)
    lines = []
    for s in drawn:
        # From its first answered bin to its last, down to the axis at each end: no model's line runs along
        # the axis over (and hides) another's.
        filled = [i for i, count in enumerate(counts[s.model]) if count]
        points = [_point(x.top * filled[0] / bins, 0, x, y)]
        for i in range(filled[0], filled[-1] + 1):
            left, _ = _point(x.top * i / bins, 0, x, y)
            right, height = _point(x.top * (i + 1) / bins, counts[s.model][i], x, y)
            points += [(left, height), (right, height)]
        points.append(_point(x.top * (filled[-1] + 1) / bins, 0, x, y))
        lines.append(_polyline(s, points))
    return legend([(s.model, s.color) for s in drawn]) + _frame("latency (s)", "requests", x, y, "".join(lines))


def timeline_chart(series: Sequence[Series]) -> str:
    """Results completed over time, per model, with the 429s and retries marked where they finished."""
    drawn = [s for s in series if s.timeline.finished]
    if not drawn:
        return "<p>No completion times in this file (it predates them).</p>"
    start = min(min(s.timeline.finished) for s in drawn)
    x = axis_for(max(max(s.timeline.finished) for s in drawn) - start)
    y = axis_for(max(len(s.timeline.finished) for s in drawn), whole=True)
    parts = []
    kinds = (("rate-limited", RATE_LIMITED_COLOR, "got a 429"), ("retried", RETRIED_COLOR, "retried"))
    marked = set()
    for s in drawn:
        times = sorted(t - start for t in s.timeline.finished)
        step = max(1, len(times) // 500)
        parts.append(_polyline(s, [_point(t, i + 1, x, y) for i, t in enumerate(times)][::step]))
        ranks = {t: i + 1 for i, t in enumerate(times)}
        for marks, (kind, color, _) in zip((s.timeline.rate_limited_at, s.timeline.retried_at), kinds, strict=True):
            for t in marks[:MARKS_PER_MODEL]:
                cx, cy = _point(t - start, ranks.get(t - start, 0), x, y)
                parts.append(f'<circle class="mark {kind}" cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{color}"/>')
                marked.add(kind)
    keys = [(s.model, s.color) for s in drawn] + [(label, c) for kind, c, label in kinds if kind in marked]
    return legend(keys) + _frame("seconds since the first result", "completed", x, y, "".join(parts))


def cost_chart(series: Sequence[Series]) -> str:
    """A bar per priced model, named beside it: no legend needed."""
    priced = [s for s in series if s.priced]
    if not priced:
        return "<p>No cost: no model had a known price (give one with --price MODEL=IN,OUT).</p>"
    if max(s.cost_usd for s in priced) <= 0:
        return "<p>No cost: every priced model cost $0.</p>"
    top, label_width, row = max(s.cost_usd for s in priced), 220, 30
    bar_room = WIDTH - label_width - 10 - 90  # the cost is written after the bar
    bars = []
    for i, s in enumerate(priced):
        width = bar_room * s.cost_usd / top
        y = 10 + i * row
        bars.append(
            f'<text x="{label_width}" y="{y + 15}" text-anchor="end">{html.escape(s.model)}</text>'
            f'<rect class="series" data-model="{html.escape(s.model)}" x="{label_width + 10}" y="{y}" '
            f'width="{width:.1f}" height="20" fill="{s.color}"/>'
            f'<text x="{label_width + 16 + width:.1f}" y="{y + 15}">${s.cost_usd:.4f}</text>'
        )
    unpriced = [s.model for s in series if not s.priced]
    note = f"<p>No price known for {html.escape(', '.join(unpriced))}.</p>" if unpriced else ""
    return _svg(20 + row * len(priced), "".join(bars)) + note


def legend(keys: Sequence[tuple[str, str]]) -> str:
    spans = "".join(f'<span class="key"><i style="background:{c}"></i>{html.escape(k)}</span>' for k, c in keys)
    return f"<p class='legend'>{spans}</p>"


def _svg(height: int, body: str) -> str:
    # As wide as the page: the grid's coordinates scale with it, its proportions kept.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {WIDTH} {height}" '
        f'preserveAspectRatio="xMidYMid meet"><rect width="{WIDTH}" height="{height}" fill="#fff"/>{body}</svg>'
    )


def _polyline(s: Series, points: Sequence[tuple[float, float]]) -> str:
    return (
        f'<polyline class="series" data-model="{html.escape(s.model)}" fill="none" stroke="{s.color}" '
        f'stroke-width="2.5" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>'
    )


def _frame(x_label: str, y_label: str, x: Axis, y: Axis, body: str) -> str:
    """Axes with a tick at each round value, a grid line at each y tick, the labels, and `body` over them."""
    ticks = []
    bottom = HEIGHT - BOTTOM
    for value in x.ticks():
        px, _ = _point(value, 0, x, y)
        ticks.append(
            f'<text class="tick x" x="{px:.1f}" y="{bottom + 18}" text-anchor="middle">{x.label(value)}</text>'
        )
        ticks.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{bottom}" y2="{bottom + 5}" stroke="#888" {_CRISP}/>')
    for value in y.ticks():
        _, py = _point(0, value, x, y)
        ticks.append(f'<text class="tick y" x="{LEFT - 8}" y="{py + 4:.1f}" text-anchor="end">{y.label(value)}</text>')
        ticks.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee" {_CRISP}/>')
    middle = (TOP + bottom) / 2
    return _svg(
        HEIGHT,
        f"{''.join(ticks)}"
        f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#888" {_CRISP}/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#888" {_CRISP}/>{body}'
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">{x_label}</text>'
        f'<text x="14" y="{middle:.0f}" transform="rotate(-90 14 {middle:.0f})" text-anchor="middle">{y_label}</text>',
    )


def _point(x_value: float, y_value: float, x: Axis, y: Axis) -> tuple[float, float]:
    return (
        LEFT + (WIDTH - LEFT - RIGHT) * x_value / x.top,
        HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * y_value / y.top,
    )
