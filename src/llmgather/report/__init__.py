"""Reporting on runs: the summary at the end of a run, `compare` (models side by side) and `report` (one
HTML page with charts), the last two from one pass over a run's output.

    summary.py   the end-of-run summary and the --dry-run estimate
    results.py   one read of an output file: per-model figures, answers, timelines
    tables.py    those figures as tables, drawn as text, markdown, CSV or HTML
    charts.py    the report's inline SVG charts, each as wide as the page, one colour per model
    axes.py      their axes: round 1-2-5 ticks from 0
    html.py      the one HTML page shell, for `compare --format html` and `report`
    compare.py   `compare`'s output in the format asked for
"""

from llmgather.report.compare import render
from llmgather.report.html import build_report
from llmgather.report.results import Comparison, compare, load_scorer
from llmgather.report.summary import Estimate, dry_run_lines, summary_lines

__all__ = [
    "Comparison",
    "Estimate",
    "build_report",
    "compare",
    "dry_run_lines",
    "load_scorer",
    "render",
    "summary_lines",
]
