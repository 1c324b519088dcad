"""The live view is laid out for the width it gets and never cuts a cell; the plain lines stay parseable."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
from typing import Any

import pytest
from rich.console import Console

from llmgather.engine import EngineStats
from llmgather.limits import LimiterStats
from llmgather.progress import Progress, plain_line

TOTAL = 1_000_000
MODELS = ("openai/gpt-5-mini-2026-08-07", "anthropic/claude-sonnet-4-5-20250929", "gemini/gemini-2.5-flash-lite")


def stats(model: str, done: int, **overrides: Any) -> EngineStats:
    """A snapshot with every field set, whatever fields the engine adds later."""
    limiter = LimiterStats(
        rpm_limit=30_000,
        tpm_limit=150_000_000,
        rpm_pace=29_400,
        tpm_pace=None,
        waiting=1_234,
        cool_downs=0,
        cooling_for_s=0.0,
    )
    values: dict[str, Any] = {
        "model": model,
        "endpoint": "https://api.example.com/v1",
        "succeeded": done - 12_345,
        "failed": 12_345,
        "in_flight": 500,
        "retries": 23_456,
        "rate_limited": 7_890,
        "prompt_tokens": 10**9,
        "completion_tokens": 10**8,
        "limiter": limiter,
        "circuit_open": False,
        "stopped_by": None,
        "errors_by_type": {},
    }
    for f in dataclasses.fields(EngineStats):
        values.setdefault(f.name, None if "None" in str(f.type) else 0)
    values.update(overrides)
    return EngineStats(**values)


def render(snapshots: list[EngineStats], width: int, height: int = 50, fallbacks: frozenset[str] = frozenset()) -> str:
    totals = {snapshot.model: TOTAL for snapshot in snapshots if snapshot.model not in fallbacks}
    view = Progress(lambda: snapshots, totals, mode="live", stream=io.StringIO())._render()
    console = Console(width=width, height=height, record=True, force_terminal=True, file=io.StringIO())
    console.print(view)
    return console.export_text()


def whole_numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d,./]*\d|\d", text)


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("count", [1, 3])
def test_no_cell_is_cut_at_80_or_120_columns(width: int, count: int) -> None:
    snapshots = [stats(model, 600_000 + i) for i, model in enumerate(MODELS[:count])]
    text = render(snapshots, width)

    assert "…" not in text, text
    assert all(len(line) <= width for line in text.splitlines()), text
    numbers = whole_numbers(text)
    for i, model in enumerate(MODELS[:count]):
        assert any(model in line for line in text.splitlines()), text
        assert f"{600_000 + i:,}/{TOTAL:,}" in numbers, text  # done/total, whole
        assert f"{600_000 + i - 12_345:,}" in numbers, text  # ok
    for shown in ("12,345", "500", "23,456", "7,890", "1,234", "29,400/30,000", "150,000,000/150,000,000"):
        assert numbers.count(shown) == count, (shown, text)


def test_a_narrow_terminal_gets_the_name_on_its_own_line_and_every_value_labelled() -> None:
    snapshots = [stats(model, 600_000) for model in MODELS[:2]]
    for width in (60, 40):
        text = render(snapshots, width)
        assert "…" not in text, text
        lines = text.splitlines()
        assert all(len(line) <= width for line in lines), text
        assert MODELS[0] in lines and MODELS[1] in lines, text
        assert whole_numbers(text).count(f"600,000/{TOTAL:,}") == 2, text


def test_a_view_taller_than_the_screen_keeps_every_model_and_its_essentials() -> None:
    snapshots = [stats(f"openai/model-{i:02d}", 1_000 * i) for i in range(12)]
    text = render(snapshots, 80, height=24)
    lines = text.splitlines()
    assert len(lines) <= 24, text
    for i in range(12):
        assert f"openai/model-{i:02d}" in text
        assert f"{1_000 * i:,}/{TOTAL:,}" in whole_numbers(text), text


def test_a_fallback_shows_its_count_without_a_total_or_an_eta() -> None:
    snapshots = [stats(MODELS[0], 600_000), stats(MODELS[1], 12_345, succeeded=12_000, failed=345)]
    text = render(snapshots, 80, fallbacks=frozenset({MODELS[1]}))
    assert "…" not in text, text
    assert "12,345 (fallback)" in text, text
    assert f"12,345/{TOTAL:,}" not in text


PLAIN = re.compile(
    r"^(?P<model>\S+): (?P<done>\d+)/(?P<total>\d+) done \((?P<ok>\d+) ok, (?P<failed>\d+) failed\), "
    r"(?P<in_flight>\d+) in flight(?:, [^,]+)*, (?P<req_s>[\d.]+) req/s, (?P<tok_s>\d+) tok/s, "
    r"pace .+, (?P<retries>\d+) retries, (?P<rate_limited>\d+) 429s, ETA \S+$"
)


def test_plain_lines_stay_one_line_per_model_per_tick_and_parseable() -> None:
    snapshots = [stats(model, 600_000, cached=7, circuit_open=True) for model in MODELS]
    out = io.StringIO()

    async def three_ticks() -> None:
        async with Progress(
            lambda: snapshots, dict.fromkeys(MODELS, TOTAL), mode="plain", stream=out, plain_every_s=0.01
        ):
            for _ in range(200):  # bounded: until three ticks are out
                await asyncio.sleep(0.01)
                if out.getvalue().count("\n") >= 3 * len(MODELS):
                    break

    asyncio.run(three_ticks())
    lines = out.getvalue().splitlines()[: 3 * len(MODELS)]
    assert [line.split(":")[0] for line in lines] == list(MODELS) * 3
    for line in lines:
        match = PLAIN.match(line)
        assert match is not None, line
        assert (match["done"], match["total"], match["failed"]) == ("600000", str(TOTAL), "12345")
    assert "\n" not in plain_line(snapshots[0], None, (1.5, 20.0))


def test_the_pace_shows_each_token_budget_apart_as_anthropic_counts_them() -> None:
    limiter = LimiterStats(
        rpm_limit=4_000,
        tpm_limit=None,
        rpm_pace=4_000,
        tpm_pace=None,
        waiting=0,
        cool_downs=0,
        cooling_for_s=0.0,
        input_tpm_limit=2_000_000,
        output_tpm_limit=400_000,
        input_tpm_pace=1_800_000,
        output_tpm_pace=400_000,
    )
    line = plain_line(stats("anthropic/claude-sonnet-4-5", 10, limiter=limiter), 100, (1.0, 1.0))
    assert "4,000/4,000 rpm, 1,800,000/2,000,000 input tpm, 400,000/400,000 output tpm" in line
