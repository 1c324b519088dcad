"""`llmgather compare`: the comparison in the format asked for (table, markdown, csv or html)."""

from __future__ import annotations

from llmgather.report import tables
from llmgather.report.html import comparison_page
from llmgather.report.results import Comparison


def render(comparison: Comparison, fmt: str, answers: str = "all") -> str:
    """The per-model table, then (unless `answers="none"`) the answers table (`"differ"`: only the
    prompts where the models disagree), in `fmt`."""
    width = None if fmt in ("csv", "html") else 60
    answered = tables.answer_table(comparison, width, answers) if answers != "none" else None
    if fmt == "html":
        return comparison_page(comparison, answered)
    figures = tables.model_table(comparison)
    if fmt == "csv":
        return "\n".join(tables.csv_text(t) for t in (figures, answered) if t is not None)
    draw = tables.markdown if fmt == "markdown" else tables.plain
    answer_lines = [draw(answered)] if answered is not None else []
    return "\n\n".join([draw(figures), *tables.notes(comparison), *answer_lines]) + "\n"
