"""One pass over a `run` output: per-model figures, each prompt's answers, and what the charts draw.

`compare` and `report` both read the file once, through `io.resume.read_records` (the checks a resume makes):
the file may be a pipe (`llmgather report <(zcat out.jsonl.gz)`), and a large one is worth reading only once.
"""

from __future__ import annotations

import importlib
import string
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmgather.errors import InputError
from llmgather.io.resume import read_records
from llmgather.stats import LatencyHistogram

EXPECTED_COLUMNS = ("expected", "answer", "expected_answer", "target", "label")
Scorer = Callable[[str | None, dict[str, Any]], float | bool]


@dataclass(slots=True)
class Timeline:
    """What the report's charts need of one model: raw latencies, and when each result came."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    finished: array[float] = field(default_factory=lambda: array("d"))
    rate_limited_at: array[float] = field(default_factory=lambda: array("d"))
    """Results that got a 429 on the way."""
    retried_at: array[float] = field(default_factory=lambda: array("d"))
    """Results sent more than once for other reasons."""


@dataclass(slots=True)
class ModelSummary:
    model: str
    results: int = 0
    succeeded: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = False
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    ttft: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Time to the first token of the streamed answers."""
    speed: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Output tokens per second of each answer: over the time after its first token when streamed."""
    speeds_streamed: int = 0
    """Of `speed`'s answers, those streamed (the rest are timed from sending, first token included)."""
    scored: int = 0
    score_total: float = 0.0
    timeline: Timeline | None = None

    @property
    def accuracy(self) -> float | None:
        return self.score_total / self.scored if self.scored else None


@dataclass(slots=True)
class Comparison:
    models: list[ModelSummary]
    """Sorted by name: the order lines reach the file is the order answers came back, which varies by run."""
    answers: dict[Any, dict[str, str | None]]
    """id -> model -> answer (None for an error); empty unless asked for."""
    scoring: str | None
    """What the accuracy column measures, or None when nothing was scored."""


def normalize(text: str | None) -> str:
    """For exact match: case, surrounding space and trailing punctuation do not count."""
    return (text or "").strip().casefold().rstrip(string.punctuation + " ").strip()


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
    path: Path,
    *,
    expected: str | None = None,
    scorer: Scorer | None = None,
    answers: bool = True,
    timelines: bool = False,
) -> Comparison:
    """Read a `run` output once. `answers=False` keeps no answer text (a large file's answers can take far
    more memory than the per-model figures); `timelines=True` keeps what the report's charts draw."""
    summaries: dict[str, ModelSummary] = {}
    by_prompt: dict[Any, dict[str, str | None]] = {}
    scoring = f"scorer {getattr(scorer, '__name__', 'scorer')}" if scorer is not None else None
    for number, record in read_records(path):
        model = str(record["model"])
        summary = summaries.get(model)
        if summary is None:
            summary = summaries[model] = ModelSummary(model, timeline=Timeline() if timelines else None)
        content = record.get("content") if record.get("error") is None else None
        try:
            _count(summary, record)
        except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong kind: not our output
            raise InputError(f"not a result line as llmgather writes it ({exc})", source=f"{path}:{number}") from None
        if answers:
            by_prompt.setdefault(record["id"], {})[model] = content
        mark = _mark(record, content, expected, scorer, f"{path}:{number}")
        if mark is not None:
            summary.score_total += mark[1]
            summary.scored += 1
            scoring = scoring or f"exact match with {mark[0]!r}"
    if not summaries:
        raise InputError("no results to compare", source=str(path))
    return Comparison([summaries[m] for m in sorted(summaries)], by_prompt, scoring)


def _count(summary: ModelSummary, record: dict[str, Any]) -> None:
    summary.results += 1
    ok = record.get("error") is None
    # A cached answer's latency is that of the run which paid for it: not this run's.
    latency = float(record["latency_s"]) if ok and record.get("latency_s") and not record.get("cached") else None
    if ok:
        summary.succeeded += 1
        usage = record.get("usage") or {}
        completion = int(usage.get("completion_tokens") or 0)
        summary.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        summary.completion_tokens += completion
        summary.cache_read_tokens += int(usage.get("cache_read_tokens") or 0)
        summary.cache_write_tokens += int(usage.get("cache_write_tokens") or 0)
        if latency is not None:
            summary.latency.add(latency)
            _time_tokens(summary, latency, record.get("ttft_s"), completion)
    if record.get("cost_usd") is not None:
        summary.cost_usd += float(record["cost_usd"])
        summary.priced = True
    timeline = summary.timeline
    if timeline is None:
        return
    if latency is not None:
        timeline.latencies.append(latency)
    finished = record.get("finished_at")
    if isinstance(finished, int | float):
        timeline.finished.append(float(finished))
        if record.get("rate_limited"):
            timeline.rate_limited_at.append(float(finished))
        elif (record.get("attempts") or 0) > 1:
            timeline.retried_at.append(float(finished))


def _time_tokens(summary: ModelSummary, latency: float, ttft: Any, completion: int) -> None:
    """The answer's time to first token, and its output speed: after the first token when streamed."""
    streamed = isinstance(ttft, int | float) and not isinstance(ttft, bool) and 0 <= ttft <= latency
    if streamed:
        summary.ttft.add(float(ttft))
    generating = latency - float(ttft) if streamed else latency
    if completion > 0 and generating > 0:
        summary.speed.add(completion / generating)
        summary.speeds_streamed += streamed


def _mark(
    record: dict[str, Any], content: str | None, expected: str | None, scorer: Scorer | None, where: str
) -> tuple[str, float] | None:
    """(what was scored, the mark) for a line whose input row can be scored, else None."""
    row = record.get("row")
    if not isinstance(row, dict):
        return None
    if scorer is not None:
        return "scorer", float(scorer(content, row))
    column = expected or next((c for c in EXPECTED_COLUMNS if c in row), None)
    if column is None:
        return None
    if column not in row:
        raise InputError(f"the row has no column {column!r} (columns: {', '.join(row)})", source=where)
    return column, float(normalize(content) == normalize(str(row[column])))
