"""The HTML pages: one self-contained page shell (no script, font or stylesheet fetched, so a page opens
the same offline, in a mail attachment, or years later) for `compare --format html` and `report`."""

from __future__ import annotations

import html
from pathlib import Path

from llmgather.report import charts
from llmgather.report.results import Comparison, compare
from llmgather.report.tables import Table, html_table, model_table, notes

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "table.figures td,table.figures th{text-align:right}"
    "table.figures td:first-child,table.figures th:first-child{text-align:left;white-space:nowrap}"
    ".key{margin-right:1.5em}.key i{display:inline-block;width:12px;height:12px;margin-right:4px}"
    "svg{display:block}svg text{font-size:13px;fill:#444}.legend{margin:.5em 0 0}.note{font-size:.9em;color:#555}"
    ".wide{overflow-x:auto}table.figures{font-size:.85em}table.figures th,table.figures td{padding:3px 6px}"
)


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def figures_table(comparison: Comparison) -> str:
    """The per-model table, numbers aligned right, and its notes."""
    table = html_table(model_table(comparison)).replace("<table>", "<table class='figures'>", 1)
    return f"<div class='wide'>{table}</div>" + "".join(
        f"<p class='note'>{html.escape(line)}</p>" for line in notes(comparison)
    )


def comparison_page(comparison: Comparison, answers: Table | None) -> str:
    """`llmgather compare --format html`: the per-model table, then each prompt's answers."""
    answered = f"<h2>Answers</h2>{html_table(answers)}" if answers is not None else ""
    return page("llmgather comparison", f"<h1>Models</h1>{figures_table(comparison)}{answered}")


def build_report(path: Path) -> str:
    """`llmgather report`: the per-model table and the charts, from one read of the output at `path`."""
    comparison = compare(path, answers=False, timelines=True)
    series = charts.series_of(comparison.models)
    sections = (
        ("Latency distribution", "latency-chart", charts.latency_chart(series)),
        ("Requests completed over time", "timeline-chart", charts.timeline_chart(series)),
        ("Cost per model", "cost-chart", charts.cost_chart(series)),
    )
    drawn = "".join(f'<h2>{title}</h2><div id="{anchor}">{chart}</div>' for title, anchor, chart in sections)
    body = f"<h1>{html.escape(path.name)}</h1>{figures_table(comparison)}{drawn}"
    return page(f"llmgather report: {path.name}", body)
