"""Models side by side, from one output file: per model, then per prompt.

Per model: success rate, latency percentiles, tokens, cost and, when the rows carry an expected answer,
exact-match accuracy (or the mean of a scorer's marks). Per prompt: each model's answer.
"""

from __future__ import annotations

import csv
import html
import importlib
import io
import json
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmgather.errors import InputError
from llmgather.stats import LatencyHistogram

EXPECTED_COLUMNS = ("expected", "answer", "expected_answer", "target", "label")
Scorer = Callable[[str | None, dict[str, Any]], float | bool]


@dataclass(slots=True)
class ModelSummary:
    model: str
    results: int = 0
    succeeded: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = False
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    scored: int = 0
    score_total: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.score_total / self.scored if self.scored else None


@dataclass(slots=True)
class Comparison:
    models: list[ModelSummary]
    answers: dict[Any, dict[str, str | None]]
    """id -> model -> answer (None for an error)."""
    scoring: str | None
    """What the accuracy column measures, or None when nothing was scored."""


def normalize(text: str | None) -> str:
    """For exact match: case, surrounding space and trailing punctuation do not count."""
    return (text or "").strip().casefold().rstrip(string.punctuation + " ").strip()


def exact_match(content: str | None, row: dict[str, Any], column: str) -> bool:
    return normalize(content) == normalize(str(row[column]))


def load_scorer(spec: str) -> Scorer:
    """`module:function`, called as function(answer, row) and returning a mark from 0 to 1 (or a bool)."""
    module_name, _, name = spec.partition(":")
    try:
        scorer = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InputError(f"--scorer {spec}: cannot load it ({exc}); expected module:function") from None
    if not callable(scorer):
        raise InputError(f"--scorer {spec}: not a function")
    return scorer  # type: ignore[no-any-return]


def compare(
    path: Path, *, expected: str | None = None, scorer: Scorer | None = None, answers: bool = True
) -> Comparison:
    """Read a `run` output. With `answers=False` the per-prompt answers are not kept (a large file's
    answers can take far more memory than the per-model figures)."""
    summaries: dict[str, ModelSummary] = {}
    by_prompt: dict[Any, dict[str, str | None]] = {}
    scoring = f"scorer {getattr(scorer, '__name__', 'scorer')}" if scorer is not None else None
    for number, record in read_records(path):
        model = str(record["model"])
        summary = summaries.setdefault(model, ModelSummary(model))
        summary.results += 1
        ok = record.get("error") is None
        if answers:
            by_prompt.setdefault(record["id"], {})[model] = record.get("content") if ok else None
        if ok:
            summary.succeeded += 1
            if record.get("latency_s") and not record.get("cached"):
                summary.latency.add(float(record["latency_s"]))
            usage = record.get("usage") or {}
            summary.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            summary.completion_tokens += int(usage.get("completion_tokens") or 0)
        if record.get("cost_usd") is not None:
            summary.cost_usd += float(record["cost_usd"])
            summary.priced = True
        row = record.get("row")
        if not isinstance(row, dict):
            continue
        if scorer is not None:
            summary.score_total += float(scorer(record.get("content") if ok else None, row))
            summary.scored += 1
            continue
        column = expected or next((c for c in EXPECTED_COLUMNS if c in row), None)
        if column is None:
            continue
        if column not in row:
            raise InputError(f"the row has no column {column!r} (columns: {', '.join(row)})", source=f"{path}:{number}")
        scoring = f"exact match with {column!r}"
        summary.score_total += exact_match(record.get("content") if ok else None, row, column)
        summary.scored += 1
    if not summaries:
        raise InputError("no results to compare", source=str(path))
    # Sorted by name: the order lines reach the file is the order answers came back, which varies by run.
    return Comparison([summaries[m] for m in sorted(summaries)], by_prompt, scoring)


def read_records(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        lines = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror}", source=str(path)) from None
    with lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError("not a result line (invalid JSON)", source=f"{path}:{number}") from None
            if not isinstance(record, dict) or "model" not in record or "id" not in record:
                raise InputError("not a result line (no id or model)", source=f"{path}:{number}")
            yield number, record


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def model_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["model", "results", "succeeded", "p50 s", "p95 s", "p99 s", "prompt tokens", "completion tokens"]
    header += ["cost USD"]
    if comparison.scoring:
        header.append("accuracy")
    rows = []
    for m in comparison.models:
        row = [
            m.model,
            str(m.results),
            f"{m.succeeded / m.results:.1%}",
            _seconds(m.latency.percentile(50)),
            _seconds(m.latency.percentile(95)),
            _seconds(m.latency.percentile(99)),
            str(m.prompt_tokens),
            str(m.completion_tokens),
            f"{m.cost_usd:.4f}" if m.priced else "-",
        ]
        if comparison.scoring:
            row.append(f"{m.accuracy:.1%}" if m.accuracy is not None else "-")
        rows.append(row)
    return header, rows


def answer_table(
    comparison: Comparison, width: int | None = 60, which: str = "all"
) -> tuple[list[str], list[list[str]]]:
    """Each prompt's answers side by side; `which="differ"` keeps the prompts where the models disagree
    (as exact match sees it) or one of them failed or has no answer."""
    models = [m.model for m in comparison.models]
    rows = []
    for request_id, by_model in sorted(comparison.answers.items(), key=_id_order):
        if which == "differ" and not _disagree(by_model, models):
            continue
        cells = []
        for model in models:
            answer = by_model.get(model, "") if model in by_model else ""
            text = "(error)" if answer is None else " ".join(answer.split())
            cells.append(text if width is None or len(text) <= width else text[: width - 1] + "…")
        rows.append([str(request_id), *cells])
    return ["id", *models], rows


def _disagree(by_model: dict[str, str | None], models: Sequence[str]) -> bool:
    answers = [by_model.get(model) for model in models]
    return any(a is None for a in answers) or len({normalize(a) for a in answers}) > 1


def _id_order(item: tuple[Any, object]) -> tuple[int, Any]:
    """Ids in their natural order (numbers before strings), not the order answers happened to arrive in."""
    request_id = item[0]
    return (0, request_id) if isinstance(request_id, int) else (1, str(request_id))


def render(comparison: Comparison, fmt: str, answers: str = "all") -> str:
    """The per-model table, then (unless `answers="none"`) the answers table, in `fmt`."""
    width = None if fmt in ("csv", "html") else 60
    tables = [model_table(comparison)]
    if answers != "none":
        tables.append(answer_table(comparison, width, answers))
    if fmt == "csv":
        return "\n".join(_csv(*table) for table in tables)
    if fmt == "html":
        return _html(comparison, tables)
    draw = _markdown if fmt == "markdown" else _plain
    note = [f"accuracy: {comparison.scoring}"] if comparison.scoring else []
    return "\n\n".join([draw(*tables[0]), *note, *(draw(*table) for table in tables[1:])]) + "\n"


def _plain(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])


def _csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(comparison: Comparison, tables: list[tuple[list[str], list[list[str]]]]) -> str:
    scoring = f"<p>accuracy: {html.escape(comparison.scoring)}</p>" if comparison.scoring else ""
    answers = "".join(f"<h1>Answers</h1>{html_table(*table)}" for table in tables[1:])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>llmgather comparison</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}</style></head><body>"
        f"<h1>Models</h1>{html_table(*tables[0])}{scoring}{answers}</body></html>\n"
    )
