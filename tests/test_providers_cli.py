"""Whole runs through the command line against the fake provider process, one per provider rule: Anthropic's
shapes, mid-stream errors, 529s and spent credit; Gemini's per-day and per-minute quotas; Groq's 498 and
`x-should-retry`; and a key that never shows in any error text."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from conftest import FakeServer, read_jsonl, run_cli, write_jsonl

from llmgather.fake import expected_content, prompt_digest, prompt_text

ANTHROPIC_KEY = "sk-ant-api03-fake-key-for-the-cli-tests-0123456789"
CLAUDE = "anthropic/claude-sonnet-4-5"
GEMINI = "gemini/gemini-2.5-flash"


def root(server: FakeServer) -> str:
    return server.url.removesuffix("/v1")


def run(
    server: FakeServer, tmp_path: Path, records: list[dict[str, Any]], model: str, *args: str, base: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`llmgather run` of the records to the fake, as `model`; Anthropic's key from its own variable."""
    source = write_jsonl(tmp_path / "in.jsonl", records)
    if base is None:
        base = root(server) if model.startswith("anthropic/") else server.url
    env = {"ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    key_env = ("--api-key-env", "ANTHROPIC_API_KEY") if model.startswith("anthropic/") else ()
    return run_cli(
        "run", str(source), "-o", str(tmp_path / "out.jsonl"), "-m", model, "--api-base", base, *key_env, *args, env=env
    )


def rows_by_id(tmp_path: Path) -> dict[Any, dict[str, Any]]:
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == len({row["id"] for row in rows}), "an id written twice"
    return {row["id"]: row for row in rows}


def prompts(n: int, word: str) -> list[dict[str, Any]]:
    return [{"id": i, "prompt": f"{word} {i}"} for i in range(n)]


# -- Anthropic -----------------------------------------------------------------------------------------

PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_an_anthropic_run_reaches_the_fake_in_anthropic_shapes(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server("--api-key", ANTHROPIC_KEY)
    rules = [{"type": "text", "text": "Rules to keep in the cache.", "cache_control": {"type": "ephemeral"}}]
    looking = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    conversations = [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hi"},
        ],
        [{"role": "system", "content": rules}, {"role": "user", "content": looking}],
        [
            {"role": "system", "content": rules},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "Sure"},
            {"role": "user", "content": "Go"},
        ],
    ]
    records = [{"id": i, "messages": m, "stop": "NEVER", "user": "u1", "n": 1} for i, m in enumerate(conversations)]
    records.append(
        {"id": "streamed", "prompt": "stream this", "stream": True, "stream_options": {"include_usage": True}}
    )
    done = run(server, tmp_path, records, CLAUDE, "--concurrency", "1", base=root(server) + "/v1/")
    assert done.returncode == 0, done.stderr
    rows = rows_by_id(tmp_path)
    for i, messages in enumerate(conversations):
        assert rows[i]["content"] == expected_content(prompt_text(messages)), rows[i]
    assert rows["streamed"]["content"] == expected_content("stream this") and rows["streamed"]["ttft_s"] > 0
    # The rules were marked for the cache: written by the first request that sent them, read by the next.
    assert rows[1]["usage"]["cache_write_tokens"] > 0 and "cache_read_tokens" not in rows[1]["usage"]
    assert rows[2]["usage"]["cache_read_tokens"] == rows[1]["usage"]["cache_write_tokens"]
    assert rows[2]["usage"]["prompt_tokens"] > rows[2]["usage"]["cache_read_tokens"]
    assert server.stats()["by_status"] == {"200": 4}


def test_a_mid_stream_error_is_retried_and_answered_once(server: FakeServer, tmp_path: Path) -> None:
    prompt = "[[fake stream_error=overloaded_error times=1]] tell me a long story please"
    records = [{"id": "s", "prompt": prompt, "stream": True}, *prompts(3, "calm")]
    done = run(server, tmp_path, records, CLAUDE)
    assert done.returncode == 0, done.stderr
    rows = rows_by_id(tmp_path)
    assert rows["s"]["content"] == expected_content(prompt) and rows["s"]["attempts"] == 2
    stats = server.stats()
    assert stats["stream_errors"] == 1 and stats["answered"] == 4 and stats["answered_twice"] == 0


def test_529_overloaded_is_retried(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server("--overload-rate", "0.3", "--seed", "3")
    records = [*prompts(20, "busy"), {"id": "twice", "prompt": "[[fake status=529 times=2]] x"}]
    done = run(server, tmp_path, records, CLAUDE, "--max-retries", "8")
    assert done.returncode == 0, done.stderr
    rows = rows_by_id(tmp_path)
    assert rows["twice"]["attempts"] == 3
    assert all(rows[i]["content"] == expected_content(f"busy {i}") for i in range(20))
    stats = server.stats()
    assert stats["by_status"]["529"] >= 3 and stats["by_status"]["200"] == 21
    assert sum(row["attempts"] for row in rows.values()) == stats["requests"]


def test_spent_credit_stops_the_run_resumably(fake_server: Any, tmp_path: Path) -> None:
    broke = fake_server("--credit-after", "4")
    records = prompts(10, "paid")
    stopped = run(broke, tmp_path, records, CLAUDE, "--concurrency", "1")
    assert stopped.returncode == 3, stopped.stderr
    assert "credit balance is too low" in stopped.stderr and "--resume" in stopped.stderr
    assert len(rows_by_id(tmp_path)) == 4 and all(row["error"] is None for row in rows_by_id(tmp_path).values())
    assert broke.stats()["by_status"] == {"200": 4, "400": 1}  # the first refusal stops it: none after

    topped_up = fake_server()
    finished = run(topped_up, tmp_path, records, CLAUDE, "--resume")
    assert finished.returncode == 0, finished.stderr
    rows = rows_by_id(tmp_path)
    assert sorted(rows) == list(range(10)) and all(
        rows[i]["content"] == expected_content(f"paid {i}") for i in range(10)
    )
    assert topped_up.stats()["requests"] == 6


def test_the_key_never_appears_in_any_error_text(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server("--api-key", "the-right-key")
    refused = run(server, tmp_path, prompts(3, "locked"), CLAUDE)
    assert refused.returncode == 3 and "AuthenticationError" in refused.stderr
    open_server = fake_server()
    records = [
        {"id": "bad", "prompt": "[[fake status=400]] no"},
        {"id": "mid", "prompt": "[[fake stream_error=api_error]] cut", "stream": True},
    ]
    failed = run(open_server, tmp_path, records, CLAUDE, "--overwrite", "--max-retries", "1")
    assert failed.returncode == 1, failed.stderr
    assert {row["error"]["type"] for row in rows_by_id(tmp_path).values()} == {"PermanentError", "ServerError"}
    for text in (refused.stdout, refused.stderr, failed.stdout, failed.stderr, (tmp_path / "out.jsonl").read_text()):
        assert ANTHROPIC_KEY not in text and ANTHROPIC_KEY[10:30] not in text


# -- Gemini --------------------------------------------------------------------------------------------


def test_a_gemini_per_day_quota_stops_the_run_after_its_first_refusal(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server("--daily-quota", "3")
    base = root(server) + "/v1beta/openai"
    records = prompts(8, "daily")
    stopped = run(server, tmp_path, records, GEMINI, "--concurrency", "1", base=base)
    assert stopped.returncode == 3, stopped.stderr
    assert "QuotaExceededError" in stopped.stderr and "--resume" in stopped.stderr
    assert len(rows_by_id(tmp_path)) == 3
    # One at a time, the first refusal is the only one: nothing else was in flight, and nothing is sent after.
    assert server.stats()["by_status"] == {"200": 3, "429": 1}


def test_a_per_day_quota_refuses_at_most_what_was_already_in_flight(fake_server: Any, tmp_path: Path) -> None:
    server = fake_server("--daily-quota", "10", "--latency", "0.05")
    stopped = run(server, tmp_path, prompts(200, "busy day"), GEMINI, "--concurrency", "8")
    assert stopped.returncode == 3, stopped.stderr
    by_status = server.stats()["by_status"]
    # The fake refuses once it has answered 10; the run stops at its first refusal. Only requests already sent
    # by then (at most the 8 in flight, the refused one among them) can draw another, and none is retried.
    assert 1 <= by_status["429"] <= 8 and set(by_status) == {"200", "429"}
    assert by_status["200"] >= 10 and len(rows_by_id(tmp_path)) == by_status["200"]


def test_a_gemini_per_minute_quota_waits_the_retry_delay(fake_server: Any, tmp_path: Path) -> None:
    log = tmp_path / "fake.log"
    server = fake_server("--log", str(log))
    prompt = "[[fake gemini=minute retry_delay=2 times=1]] soon"
    done = run(server, tmp_path, [{"id": "m", "prompt": prompt}], GEMINI, base=root(server) + "/v1beta/openai")
    assert done.returncode == 0, done.stderr
    row = rows_by_id(tmp_path)["m"]
    assert row["content"] == expected_content(prompt) and row["attempts"] == 2 and row["rate_limited"] == 1
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    refused, answered = (entry for entry in seen if entry["prompt"] == prompt_digest(prompt))
    assert refused["outcome"] == 429 and answered["outcome"] == 200
    assert answered["t"] - refused["t"] >= 1.9  # the body's retryDelay, not a quarter-second backoff


# -- Groq's 498 and x-should-retry ---------------------------------------------------------------------


def test_498_and_x_should_retry_either_way(server: FakeServer, tmp_path: Path) -> None:
    records = [
        {"id": "groq", "prompt": "[[fake status=498 code=capacity_exceeded times=1]] busy"},
        {"id": "yes", "prompt": "[[fake status=400 should_retry=true times=1]] try again"},
        {"id": "no", "prompt": "[[fake status=503 should_retry=false]] do not"},
    ]
    done = run(server, tmp_path, records, "openai/fake")
    assert done.returncode == 1, done.stderr
    rows = rows_by_id(tmp_path)
    assert rows["groq"]["error"] is None and rows["groq"]["attempts"] == 2
    assert rows["yes"]["error"] is None and rows["yes"]["attempts"] == 2
    assert rows["no"]["error"]["type"] == "PermanentError" and rows["no"]["attempts"] == 1
    assert Counter(server.stats()["by_status"]) == Counter({"200": 2, "498": 1, "400": 1, "503": 1})
