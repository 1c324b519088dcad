"""Holes a hostile tester found: a cost budget smaller than one prompt, a fallback the budget blocked, a cache
locked by another process at start, and a provider's usage that would be a negative cost."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, run_cli, write_jsonl

from llmgather.backends.openai import parse_completion
from llmgather.budget import Budget
from llmgather.errors import ServerError


def prompts(n: int, tag: str) -> list[dict[str, object]]:
    return [{"id": f"{tag}-{i}", "prompt": f"{tag} question number {i}"} for i in range(n)]


# --- 1. --max-cost below what one request's prompt alone costs --------------------------------------------


def test_a_cost_budget_below_one_prompt_sends_nothing(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3, "dear"))
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url]
    # $1000 per million prompt tokens: each prompt alone costs about $0.005, far over the $0.000001 budget.
    done = run_cli(*args, "--price", "openai/fake=1000,2000", "--max-cost", "0.000001")
    assert done.returncode == 3, done.stderr
    assert "budget of $1e-06" in done.stderr
    assert server.stats()["requests"] == 0
    assert not out.exists() or read_jsonl(out) == []
    resumed = run_cli(*args, "--price", "openai/fake=1000,2000", "--max-cost", "1", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(row["id"] for row in read_jsonl(out)) == sorted(p["id"] for p in prompts(3, "dear"))


def test_with_nothing_spent_a_request_goes_if_its_prompt_fits_though_its_estimate_does_not() -> None:
    budget = Budget(max_cost_usd=1.0)
    assert budget.try_take(5.0, certain_usd=0.5) is True  # a cautious estimate does not stop the first
    budget.release(budget.held)
    assert Budget(max_cost_usd=1.0).try_take(5.0, certain_usd=0.5) is True
    refused = Budget(max_cost_usd=1.0)
    assert refused.try_take(5.0, certain_usd=1.5) is False
    assert refused.requests == 0 and refused.exhausted() is not None


def test_a_waiting_request_whose_prompt_alone_is_over_the_budget_is_refused() -> None:
    async def scenario() -> tuple[int | None, int]:
        budget = Budget(max_cost_usd=1.0)
        assert budget.try_take(0.6) is True
        waiting = asyncio.create_task(budget.take(lambda: 5.0, certain_usd=1.5))
        await asyncio.sleep(0)  # it waits for what is held to settle
        assert not waiting.done()
        budget.release(budget.held)
        return await asyncio.wait_for(waiting, 5), budget.requests

    assert asyncio.run(scenario()) == (None, 1)


# --- 2. a fallback blocked by the budget leaves the request for a resume ----------------------------------


def test_a_fallback_the_budget_blocked_writes_no_failure_and_a_resume_sends_it(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # Every prompt is over the primary's context (a 400, final), and it answers slowly: all 20 requests take
    # the 20-request budget before the first 400 comes back, so no fallback can be sent.
    bad = fake_server("--max-context", "1", "--latency", "0.3")
    good = fake_server()
    models = tmp_path / "models.toml"
    models.write_text(
        f'[[model]]\nname = "openai/bad"\napi_base = "{bad.url}"\n\n'
        f'[[model]]\nname = "openai/good"\napi_base = "{good.url}"\n'
    )
    records = prompts(20, "fall")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "--models", str(models), "--fallback", "openai/good"]
    stopped = run_cli(*args, "--concurrency", "20", "--max-requests", "20")
    assert stopped.returncode == 3, stopped.stderr
    assert bad.stats()["requests"] == 20 and good.stats()["requests"] == 0
    written = read_jsonl(out) if out.exists() else []
    assert [row for row in written if row.get("error")] == []  # no 400 recorded as final

    resumed = run_cli(*args, "--concurrency", "20", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rows = {row["id"]: row for row in read_jsonl(out)}
    assert set(rows) == {r["id"] for r in records}
    assert all(row["error"] is None and row.get("answered_by") == "openai/good" for row in rows.values())


# --- 3. a cache locked by another process at start ---------------------------------------------------------


@pytest.fixture
def locked_cache(tmp_path: Path, locker: Callable[[Path], subprocess.Popen[str]]) -> Path:
    """A cache file that another process holds `BEGIN EXCLUSIVE` on for the whole test."""
    path = tmp_path / "k.sqlite"
    locker(path)
    return path


def test_a_cache_locked_at_start_is_refused_in_one_line(server: FakeServer, locked_cache: Path, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3, "locked"))
    out = tmp_path / "out.jsonl"
    # run_cli gives up after 120 s: before, the run waited some 275 s in silence.
    args = ["run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url]
    done = run_cli(*args, "--cache", str(locked_cache))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(locked_cache) in lines[0] and "another process holds the cache locked" in lines[0]
    assert server.stats()["requests"] == 0


# --- 4. a provider's usage that is not a count of tokens ----------------------------------------------------


def completion(usage: object) -> bytes:
    choice = {"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    return json.dumps({"choices": [choice], "usage": usage}).encode()


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -1_000_000_000, "completion_tokens": 5},
        {"prompt_tokens": 3, "completion_tokens": -1},
        {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": -8},
        {"prompt_tokens": 2.5, "completion_tokens": 5},
        {"prompt_tokens": "12", "completion_tokens": 5},
        {"prompt_tokens": True, "completion_tokens": 5},
    ],
)
def test_a_negative_or_fractional_token_count_is_a_malformed_answer(usage: dict[str, object]) -> None:
    with pytest.raises(ServerError, match="malformed completion"):
        parse_completion(completion(usage), {}, None)
