"""The report's charts as inline SVG, drawn here: no script, font or stylesheet to fetch.

Each chart draws one `Series` per model: its latency distribution, its results over time with those that
got a 429 or were retried marked, its cost.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from llmgather.report.results import ModelSummary, Timeline

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
RATE_LIMITED_COLOR = "#d62728"
RETRIED_COLOR = "#7f7f7f"
WIDTH, HEIGHT, PAD = 760, 260, 48
MARKS_PER_MODEL = 400  # enough to see where 429s and retries cluster, small enough to keep the file light
LATENCY_BINS = 30


@dataclass(slots=True)
class Series:
    model: str
    color: str
    timeline: Timeline
    cost_usd: float


def series_of(models: Sequence[ModelSummary]) -> list[Series]:
    """One series per model, each in its own colour; the models must have been read with timelines."""
    return [
        Series(m.model, COLORS[i % len(COLORS)], m.timeline or Timeline(), m.cost_usd) for i, m in enumerate(models)
    ]


def latency_chart(series: Sequence[Series]) -> str:
    """A histogram per model over shared bins, drawn as steps so that the models overlay."""
    top = max((max(s.timeline.latencies) for s in series if s.timeline.latencies), default=0.0) * 1.05
    if top <= 0:
        return "<p>No latencies: nothing was answered by a provider.</p>"
    counts = {s.model: [0] * LATENCY_BINS for s in series}
    for s in series:
        for value in s.timeline.latencies:
            counts[s.model][min(LATENCY_BINS - 1, int(value / top * LATENCY_BINS))] += 1
    y_max = max(max(c) for c in counts.values()) or 1
    lines = []
    for s in series:
        points = []
        for i, count in enumerate(counts[s.model]):
            left, _ = _point(top * i / LATENCY_BINS, 0, top, y_max)
            right, height = _point(top * (i + 1) / LATENCY_BINS, count, top, y_max)
            points += [(left, height), (right, height)]
        lines.append(_polyline(s, points))
    return _frame("latency (s)", "requests", top, y_max, "".join(lines))


def timeline_chart(series: Sequence[Series]) -> str:
    """Results completed over time, per model, with the 429s and retries marked where they finished."""
    start = min((min(s.timeline.finished) for s in series if s.timeline.finished), default=None)
    if start is None:
        return "<p>No completion times in this file (it predates them).</p>"
    x_max = max(max(s.timeline.finished) for s in series if s.timeline.finished) - start or 1.0
    y_max = max(len(s.timeline.finished) for s in series)
    parts = []
    for s in series:
        times = sorted(t - start for t in s.timeline.finished)
        step = max(1, len(times) // 500)
        parts.append(_polyline(s, [_point(t, i + 1, x_max, y_max) for i, t in enumerate(times)][::step]))
        ranks = {t: i + 1 for i, t in enumerate(times)}
        kinds = (
            (s.timeline.rate_limited_at, RATE_LIMITED_COLOR, "rate-limited"),
            (s.timeline.retried_at, RETRIED_COLOR, "retried"),
        )
        for marks, color, kind in kinds:
            for t in marks[:MARKS_PER_MODEL]:
                x, y = _point(t - start, ranks.get(t - start, 0), x_max, y_max)
                parts.append(f'<circle class="mark {kind}" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
    return _frame("seconds since the first result", "completed", x_max, y_max, "".join(parts))


def cost_chart(series: Sequence[Series]) -> str:
    top = max((s.cost_usd for s in series), default=0.0)
    if top <= 0:
        return "<p>No cost: no model had a known price (give one with --price MODEL=IN,OUT).</p>"
    row = 28
    height = PAD + row * len(series)
    bars = []
    for i, s in enumerate(series):
        width = (WIDTH - 2 * PAD - 160) * s.cost_usd / top
        y = 16 + i * row
        bars.append(
            f'<text x="150" y="{y + 15}" text-anchor="end">{html.escape(s.model)}</text>'
            f'<rect class="series" data-model="{html.escape(s.model)}" x="160" y="{y}" width="{width:.1f}" '
            f'height="20" fill="{s.color}"/><text x="{166 + width:.1f}" y="{y + 15}">${s.cost_usd:.4f}</text>'
        )
    return _svg(height, "".join(bars))


def _svg(height: int, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">'
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>{body}</svg>'
    )


def _polyline(s: Series, points: Sequence[tuple[float, float]]) -> str:
    return (
        f'<polyline class="series" data-model="{html.escape(s.model)}" fill="none" stroke="{s.color}" '
        f'stroke-width="2.5" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>'
    )


def _frame(x_label: str, y_label: str, x_max: float, y_max: float, body: str) -> str:
    """Axes with five ticks each, the labels, and `body` drawn over them."""
    ticks = []
    for i in range(5):
        x = PAD + (WIDTH - 2 * PAD) * i / 4
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * i / 4
        ticks.append(f'<text x="{x:.0f}" y="{HEIGHT - PAD + 16}" text-anchor="middle">{_number(x_max * i / 4)}</text>')
        ticks.append(f'<text x="{PAD - 6}" y="{y + 4:.0f}" text-anchor="end">{_number(y_max * i / 4)}</text>')
        ticks.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
    return _svg(
        HEIGHT,
        f"{''.join(ticks)}"
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>{body}'
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">{x_label}</text>'
        f'<text x="12" y="{HEIGHT / 2:.0f}" transform="rotate(-90 12 {HEIGHT / 2:.0f})" text-anchor="middle">'
        f"{y_label}</text>",
    )


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _point(x: float, y: float, x_max: float, y_max: float) -> tuple[float, float]:
    return (
        PAD + (WIDTH - 2 * PAD) * (x / x_max if x_max else 0.0),
        HEIGHT - PAD - (HEIGHT - 2 * PAD) * (y / y_max if y_max else 0.0),
    )
