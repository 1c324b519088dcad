"""The comparison as tables of strings (per model, per prompt), and those tables drawn as text."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from typing import Any

from llmgather.report.results import Comparison, normalize

Table = tuple[list[str], list[list[str]]]
"""A header and its rows, every cell already a string."""


def model_table(comparison: Comparison) -> Table:
    """One row per model. Cached tokens, time to first token and output speed have columns only when some
    model has them: most runs use no prompt cache, and only streamed answers have a first token timed."""
    models = comparison.models
    cached = any(m.cache_read_tokens or m.cache_write_tokens for m in models)
    streamed = any(m.ttft.count for m in models)
    speed = any(m.speed.count for m in models)
    header = ["model", "results", "succeeded", "p50 s", "p95 s", "p99 s", "prompt tokens", "completion tokens"]
    header += ["cache read tokens", "cache write tokens"] if cached else []
    header += ["TTFT p50 s", "TTFT p95 s"] if streamed else []
    header += ["output tok/s"] if speed else []
    header += ["cost USD"]
    if comparison.scoring:
        header.append("accuracy")
    rows = []
    for m in models:
        row = [m.model, str(m.results), f"{m.succeeded / m.results:.1%}"]
        row += [_seconds(m.latency.percentile(q)) for q in (50, 95, 99)]
        row += [str(m.prompt_tokens), str(m.completion_tokens)]
        row += [str(m.cache_read_tokens), str(m.cache_write_tokens)] if cached else []
        row += [_seconds(m.ttft.percentile(q)) for q in (50, 95)] if streamed else []
        row += [_rate(m.speed.percentile(50))] if speed else []
        row.append(f"{m.cost_usd:.4f}" if m.priced else "-")
        if comparison.scoring:
            row.append(f"{m.accuracy:.1%}" if m.accuracy is not None else "-")
        rows.append(row)
    return header, rows


def notes(comparison: Comparison) -> list[str]:
    """What the model table's less obvious columns measure, for beneath it."""
    timed = sum(m.speed.count for m in comparison.models)
    streamed = sum(m.speeds_streamed for m in comparison.models)
    lines = []
    if timed:
        if streamed == timed:
            how = "completion tokens / (latency - TTFT), every answer having been streamed"
        elif streamed == 0:
            how = "completion tokens / latency (no answer was streamed, so the time to the first token is included)"
        else:
            how = (
                f"completion tokens / (latency - TTFT) for the {streamed:,} streamed answers,"
                f" completion tokens / latency (first token included) for the other {timed - streamed:,}"
            )
        lines.append(f"output tok/s: the median over answers of {how}")
    if comparison.scoring:
        lines.append(f"accuracy: {comparison.scoring}")
    return lines


def answer_table(comparison: Comparison, width: int | None = 60, which: str = "all") -> Table:
    """Each prompt's answers side by side; `which="differ"` keeps the prompts where the models disagree
    (as exact match sees it) or one of them failed or has no answer."""
    models = [m.model for m in comparison.models]
    rows = []
    for request_id, by_model in sorted(comparison.answers.items(), key=_id_order):
        if which == "differ" and not _disagree(by_model, models):
            continue
        cells = []
        for model in models:
            answer = by_model.get(model, "")
            text = "(error)" if answer is None else " ".join(answer.split())
            cells.append(text if width is None or len(text) <= width else text[: width - 1] + "…")
        rows.append([str(request_id), *cells])
    return ["id", *models], rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _disagree(by_model: dict[str, str | None], models: Sequence[str]) -> bool:
    answers = [by_model.get(model) for model in models]
    return any(a is None for a in answers) or len({normalize(a) for a in answers}) > 1


def _id_order(item: tuple[Any, object]) -> tuple[int, Any]:
    """Ids in their natural order (numbers before strings), not the order answers happened to arrive in."""
    request_id = item[0]
    return (0, request_id) if isinstance(request_id, int | float) else (1, str(request_id))


def plain(table: Table) -> str:
    header, rows = table
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def markdown(table: Table) -> str:
    header, rows = table

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def csv_text(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table[0])
    writer.writerows(table[1])
    return out.getvalue()


def html_table(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
