"""Cached tokens in the summary and `compare`; time to first token and output speed per model in `compare` and
the report, each shown only where the output has it."""

from __future__ import annotations

import asyncio
import csv
import io
import random
from pathlib import Path
from typing import Any

from conftest import FakeServer, read_jsonl, run_cli, write_jsonl

from llmgather.backends.function import FunctionBackend
from llmgather.engine import Engine
from llmgather.pricing import PRICES_PER_MTOK, Prices
from llmgather.report import summary_lines
from llmgather.stats import LatencyHistogram
from llmgather.types import Request, Response, Usage


def model_rows(csv_text: str) -> dict[str, dict[str, str]]:
    first_table = csv_text.split("\n\n", 1)[0].replace("\r\n", "\n")
    return {row["model"]: row for row in csv.DictReader(io.StringIO(first_table))}


def summary_of(usage: Usage) -> list[str]:
    async def answer(request: Request) -> Response:
        return Response("ok", usage=usage)

    async def scenario() -> list[str]:
        engine = Engine(FunctionBackend(answer, model="anthropic/m"))
        async for _ in engine.results([Request.from_prompt(i, f"q{i}") for i in range(4)]):
            pass
        return summary_lines([engine.stats()], 1.0)

    return asyncio.run(scenario())


def test_the_summary_shows_the_cached_tokens_read_and_written() -> None:
    lines = summary_of(Usage(1_000, 10, 1_010, cache_read_tokens=700, cache_write_tokens=200))
    assert "  cached     2,800 read from the prompt cache, 800 written to it (of the prompt tokens)" in lines
    read_only = summary_of(Usage(1_000, 10, 1_010, cache_read_tokens=700))
    assert "  cached     2,800 read from the prompt cache (of the prompt tokens)" in read_only
    assert not [line for line in summary_of(Usage(1_000, 10, 1_010)) if line.lstrip().startswith("cached")]


def record(i: int, model: str, **extra: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": 1_000, "completion_tokens": 50 + i % 7, "total_tokens": 1_050 + i % 7}
    line = {"id": i, "model": model, "content": f"answer {i}", "usage": usage, "latency_s": 0.5 + i / 100}
    return line | {"attempts": 1, "cost_usd": None, "error": None, "cached": False, "finished_at": 1e9 + i} | extra


def outputs(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """anthropic/s streamed (ttft_s) with prompt caching; openai/p neither; one failure and one cached answer."""
    rng = random.Random(7)
    records = []
    for i in range(40):
        usage = {"prompt_tokens": 1_000, "completion_tokens": 40 + i % 9, "total_tokens": 1_040 + i % 9}
        usage |= {"cache_read_tokens": 600} if i % 2 else {"cache_write_tokens": 600}
        records.append(record(i, "anthropic/s", usage=usage, ttft_s=round(0.1 + rng.random() / 5, 4)))
        records.append(record(i, "openai/p"))
    records.append(record(40, "openai/p", error={"type": "BadRequest", "status": 400, "message": "no"}, usage=None))
    records.append(record(41, "anthropic/s", cached=True, ttft_s=0.01))  # its times are another run's
    return write_jsonl(tmp_path / "out.jsonl", records), records


def timed(records: list[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    return [r for r in records if r["model"] == model and r["error"] is None and not r["cached"]]


def test_compare_shows_cached_tokens_ttft_percentiles_and_output_speed(tmp_path: Path) -> None:
    out, records = outputs(tmp_path)
    compared = run_cli("compare", str(out), "--format", "csv", "--answers", "none")
    assert compared.returncode == 0, compared.stderr
    rows = model_rows(compared.stdout)
    streamed, plain = timed(records, "anthropic/s"), timed(records, "openai/p")
    ok = [r for r in records if r["model"] == "anthropic/s" and r["error"] is None]
    assert rows["anthropic/s"]["cache read tokens"] == str(sum(r["usage"].get("cache_read_tokens", 0) for r in ok))
    assert rows["anthropic/s"]["cache write tokens"] == str(sum(r["usage"].get("cache_write_tokens", 0) for r in ok))
    assert (rows["openai/p"]["cache read tokens"], rows["openai/p"]["cache write tokens"]) == ("0", "0")
    ttft = LatencyHistogram()
    for r in streamed:
        ttft.add(r["ttft_s"])
    assert rows["anthropic/s"]["TTFT p50 s"] == f"{ttft.percentile(50):.3f}"
    assert rows["anthropic/s"]["TTFT p95 s"] == f"{ttft.percentile(95):.3f}"
    assert rows["openai/p"]["TTFT p50 s"] == rows["openai/p"]["TTFT p95 s"] == "-"
    for model, answers, after_first_token in (("anthropic/s", streamed, True), ("openai/p", plain, False)):
        speeds = LatencyHistogram()
        for r in answers:
            seconds = r["latency_s"] - (r["ttft_s"] if after_first_token else 0.0)
            speeds.add(r["usage"]["completion_tokens"] / seconds)
        assert rows[model]["output tok/s"] == f"{speeds.percentile(50):.1f}"
    text = run_cli("compare", str(out), "--answers", "none").stdout
    assert (
        "output tok/s: the median over answers of completion tokens / (latency - TTFT) for the 40 streamed answers,"
        " completion tokens / latency (first token included) for the other 40"
    ) in text


def test_columns_without_data_are_left_out(tmp_path: Path) -> None:
    out = write_jsonl(tmp_path / "out.jsonl", [record(i, "openai/p") for i in range(5)])
    compared = run_cli("compare", str(out), "--format", "csv", "--answers", "none")
    header = compared.stdout.splitlines()[0].split(",")
    assert "output tok/s" in header
    assert not {"cache read tokens", "cache write tokens", "TTFT p50 s", "TTFT p95 s"} & set(header)
    text = run_cli("compare", str(out), "--answers", "none").stdout
    assert "completion tokens / latency (no answer was streamed" in text and "TTFT p50" not in text


def test_the_report_shows_ttft_and_speed_with_the_footnote(tmp_path: Path) -> None:
    out, _ = outputs(tmp_path)
    page = tmp_path / "report.html"
    made = run_cli("report", str(out), "-o", str(page))
    assert made.returncode == 0, made.stderr
    text = page.read_text()
    figures = text.split("<table class='figures'>", 1)[1].split("</table>", 1)[0]
    for column in ("cache read tokens", "cache write tokens", "TTFT p50 s", "TTFT p95 s", "output tok/s"):
        assert f"<th>{column}</th>" in figures
    assert "<p class='note'>output tok/s: the median over answers of completion tokens / (latency - TTFT)" in text
    html_compare = run_cli("compare", str(out), "--format", "html").stdout
    assert "<th>TTFT p95 s</th>" in html_compare and "<p class='note'>output tok/s" in html_compare


def billed(prices: Prices, usage: dict[str, int]) -> float:
    read, written = usage.get("cache_read_tokens", 0), usage.get("cache_write_tokens", 0)
    uncached = usage["prompt_tokens"] - read - written
    rates = (prices.input, prices.cache_read or prices.input, prices.cache_write or prices.input, prices.output)
    counts = (uncached, read, written, usage["completion_tokens"])
    return round(sum(n * rate for n, rate in zip(counts, rates, strict=True)) / 1e6, 8)


def test_a_run_against_the_fake_bills_its_cache_and_shows_it_everywhere(server: FakeServer, tmp_path: Path) -> None:
    # Anthropic's prompt caching as the fake does it: the marked system prompt is written once, then read.
    system = [{"type": "text", "text": "Rules to keep. " * 80, "cache_control": {"type": "ephemeral"}}]
    rows = [
        {"id": i, "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"question {i}"}]}
        | {"max_tokens": 40}
        | ({"stream": True} if i % 2 else {})
        for i in range(10)
    ]
    source, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    done = run_cli(
        *("run", str(source), "-o", str(out), "-m", "anthropic/claude-haiku-4-5"),
        *("--api-base", server.url.removesuffix("/v1"), "--concurrency", "1"),
        env={"ANTHROPIC_API_KEY": "sk-ant-test"},
    )
    assert done.returncode == 0, done.stderr
    lines = read_jsonl(out)
    read = sum(r["usage"].get("cache_read_tokens", 0) for r in lines)
    written = sum(r["usage"].get("cache_write_tokens", 0) for r in lines)
    assert read > 0 and written > 0  # the fake did cache: this run tests something
    haiku = PRICES_PER_MTOK["claude-haiku-4-5"]  # at --api-base, the bundled table prices it
    assert [r["cost_usd"] for r in lines] == [billed(haiku, r["usage"]) for r in lines]
    assert f"  cached     {read:,} read from the prompt cache, {written:,} written to it" in done.stderr
    compared = model_rows(run_cli("compare", str(out), "--format", "csv", "--answers", "none").stdout)
    row = compared["anthropic/claude-haiku-4-5"]
    assert (row["cache read tokens"], row["cache write tokens"]) == (str(read), str(written))
    assert row["TTFT p50 s"] != "-" and sum(1 for r in lines if "ttft_s" in r) == 5  # the streamed half


def test_openai_cached_tokens_are_billed_at_the_read_rate(server: FakeServer, tmp_path: Path) -> None:
    rows = [{"id": i, "prompt": f"question {i} " + "word " * 200 + "[[fake cached=128]]"} for i in range(6)]
    source, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "-m", "openai/gpt-4o-mini", "--api-base", server.url)
    assert done.returncode == 0, done.stderr
    lines = read_jsonl(out)
    assert all(r["usage"]["cache_read_tokens"] == 128 for r in lines)
    assert [r["cost_usd"] for r in lines] == [billed(PRICES_PER_MTOK["gpt-4o-mini"], r["usage"]) for r in lines]
    assert f"  cached     {128 * 6:,} read from the prompt cache (of the prompt tokens)" in done.stderr
