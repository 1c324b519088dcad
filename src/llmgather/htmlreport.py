"""`llmgather report`: one self-contained HTML file about a run, to look at.

The charts are inline SVG drawn here: no script, font or stylesheet is fetched, so the file opens the
same offline, in a mail attachment, or years later. It shows the per-model table, each model's latency
distribution, requests completed over time with 429s and retries marked, and the cost per model.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmgather.compare import Comparison, compare, html_table, model_table, read_records

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
RATE_LIMITED_COLOR = "#d62728"
RETRIED_COLOR = "#7f7f7f"
WIDTH, HEIGHT, PAD = 760, 260, 48
MARKS_PER_MODEL = 400  # enough to see where 429s and retries cluster, small enough to keep the file light


@dataclass(slots=True)
class _Series:
    model: str
    color: str
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    rate_limited_at: list[float] = field(default_factory=list)
    retried_at: list[float] = field(default_factory=list)
    cost_usd: float = 0.0


def build_report(path: Path) -> str:
    comparison = compare(path, answers=False)
    series = _series(path, comparison)
    start = min((t for s in series for t in s.finished), default=0.0)
    charts = [
        ("Latency distribution", "latency-chart", _latency_chart(series)),
        ("Requests completed over time", "timeline-chart", _timeline_chart(series, start)),
        ("Cost per model", "cost-chart", _cost_chart(series)),
    ]
    table = html_table(*model_table(comparison))
    legend = "".join(
        f'<span class="key"><i style="background:{s.color}"></i>{html.escape(s.model)}</span>' for s in series
    )
    body = "".join(f'<h2>{title}</h2><div id="{anchor}">{svg}</div>' for title, anchor, svg in charts)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>llmgather report: {html.escape(path.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(path.name)}</h1>{table}"
        f"<p class='legend'>{legend}<span class='key'><i style='background:{RATE_LIMITED_COLOR}'></i>got a 429</span>"
        f"<span class='key'><i style='background:{RETRIED_COLOR}'></i>retried</span></p>"
        f"{body}</body></html>\n"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    ".key{margin-right:1.5em}.key i{display:inline-block;width:12px;height:12px;margin-right:4px}"
    "svg text{font-size:11px;fill:#444}"
)


def _series(path: Path, comparison: Comparison) -> list[_Series]:
    by_model = {m.model: _Series(m.model, COLORS[i % len(COLORS)]) for i, m in enumerate(comparison.models)}
    for _, record in read_records(path):
        s = by_model[str(record["model"])]
        finished = record.get("finished_at")
        if record.get("error") is None and record.get("latency_s") and not record.get("cached"):
            s.latencies.append(float(record["latency_s"]))
        if isinstance(finished, int | float):
            s.finished.append(float(finished))
            if record.get("rate_limited"):
                s.rate_limited_at.append(float(finished))
            elif (record.get("attempts") or 0) > 1:
                s.retried_at.append(float(finished))
        s.cost_usd += float(record.get("cost_usd") or 0.0)
    return list(by_model.values())


def _frame(x_label: str, y_label: str, x_max: float, y_max: float, body: str) -> str:
    ticks = []
    for i in range(5):
        x = PAD + (WIDTH - 2 * PAD) * i / 4
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * i / 4
        ticks.append(f'<text x="{x:.0f}" y="{HEIGHT - PAD + 16}" text-anchor="middle">{_number(x_max * i / 4)}</text>')
        ticks.append(f'<text x="{PAD - 6}" y="{y + 4:.0f}" text-anchor="end">{_number(y_max * i / 4)}</text>')
        ticks.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>{"".join(ticks)}'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>{body}'
        f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">{x_label}</text>'
        f'<text x="12" y="{HEIGHT / 2:.0f}" transform="rotate(-90 12 {HEIGHT / 2:.0f})" text-anchor="middle">'
        f"{y_label}</text></svg>"
    )


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _point(x: float, y: float, x_max: float, y_max: float) -> tuple[float, float]:
    return (
        PAD + (WIDTH - 2 * PAD) * (x / x_max if x_max else 0.0),
        HEIGHT - PAD - (HEIGHT - 2 * PAD) * (y / y_max if y_max else 0.0),
    )


def _latency_chart(series: Sequence[_Series]) -> str:
    """A histogram per model over shared bins, drawn as steps so that the models overlay."""
    everything = [v for s in series for v in s.latencies]
    if not everything:
        return "<p>No latencies: nothing was answered by a provider.</p>"
    bins = 30
    top = max(everything) * 1.05 or 1.0
    counts = {s.model: [0] * bins for s in series}
    for s in series:
        for value in s.latencies:
            counts[s.model][min(bins - 1, int(value / top * bins))] += 1
    y_max = max(max(c) for c in counts.values()) or 1
    paths = []
    for s in series:
        points = []
        for i, count in enumerate(counts[s.model]):
            left, _ = _point(top * i / bins, 0, top, y_max)
            right, height = _point(top * (i + 1) / bins, count, top, y_max)
            points += [f"{left:.1f},{height:.1f}", f"{right:.1f},{height:.1f}"]
        paths.append(
            f'<polyline class="series" data-model="{html.escape(s.model)}" fill="none" stroke="{s.color}" '
            f'stroke-width="2.5" points="{" ".join(points)}"/>'
        )
    return _frame("latency (s)", "requests", top, y_max, "".join(paths))


def _timeline_chart(series: Sequence[_Series], start: float) -> str:
    if not any(s.finished for s in series):
        return "<p>No completion times in this file (it predates them).</p>"
    x_max = max(t - start for s in series for t in s.finished) or 1.0
    y_max = max(len(s.finished) for s in series)
    parts = []
    for s in series:
        times = sorted(t - start for t in s.finished)
        step = max(1, len(times) // 500)
        points = [_point(t, i + 1, x_max, y_max) for i, t in enumerate(times)][::step]
        parts.append(
            f'<polyline class="series" data-model="{html.escape(s.model)}" fill="none" stroke="{s.color}" '
            f'stroke-width="2.5" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>'
        )
        ranks = {t: i + 1 for i, t in enumerate(times)}
        kinds = ((s.rate_limited_at, RATE_LIMITED_COLOR, "rate-limited"), (s.retried_at, RETRIED_COLOR, "retried"))
        for marks, color, kind in kinds:
            for t in marks[:MARKS_PER_MODEL]:
                x, y = _point(t - start, ranks.get(t - start, 0), x_max, y_max)
                parts.append(f'<circle class="mark {kind}" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
    return _frame("seconds since the first result", "completed", x_max, y_max, "".join(parts))


def _cost_chart(series: Sequence[_Series]) -> str:
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
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">'
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>{"".join(bars)}</svg>'
    )
