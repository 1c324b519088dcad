"""The engine against a real fake-provider process: every status, Retry-After, hangs, drops, streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeServer

import llmgather
from llmgather.fake import expected_content, prompt_digest

FAST = {"api_key": "sk-test", "timeout": 5.0}


def gather(server: FakeServer, prompts: list[str], **options: object) -> list[llmgather.Result]:
    return llmgather.run(prompts, model="openai/fake", api_base=server.url, **{**FAST, **options})


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_each_transient_status_is_retried_until_it_succeeds(server: FakeServer, status: int) -> None:
    prompt = f"[[fake status={status} times=2 retry_after=0.01]] question"
    [result] = gather(server, [prompt])
    assert result.ok, result.error
    assert result.attempts == 3
    assert result.content == expected_content(prompt)
    assert server.stats()["requests"] == 3


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_each_permanent_status_fails_at_once(server: FakeServer, status: int) -> None:
    # After a success: a 404 before any would be retried, as it may mean the endpoint is wrong (a 404
    # for every request stops the run; see test_engine_unit).
    ok, result = gather(server, ["fine", f"[[fake status={status}]] bad request"], concurrency=1)
    assert ok.ok and result.error is not None
    assert (result.error.type, result.error.status, result.attempts) == ("PermanentError", status, 1)
    assert server.stats()["requests"] == 2


def test_retries_are_bounded_by_max_retries(server: FakeServer) -> None:
    [result] = gather(server, ["[[fake status=503 retry_after=0.01]] always down"], max_retries=2)
    assert result.error is not None and result.error.type == "ServerError"
    assert result.attempts == 3
    assert server.stats()["requests"] == 3


def test_one_failure_never_stops_the_others(server: FakeServer) -> None:
    prompts = [f"q{i}" for i in range(30)] + ["[[fake status=400]] broken"]
    results = gather(server, prompts)
    assert [r.ok for r in results] == [True] * 30 + [False]
    assert [r.content for r in results[:30]] == [expected_content(p) for p in prompts[:30]]


def test_retry_after_is_honoured(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    server = fake_server("--log", str(log))
    prompt = "[[fake status=429 times=1 retry_after=0.6]] wait for me"
    [result] = gather(server, [prompt])
    assert result.ok and result.attempts == 2
    digest = prompt_digest(prompt)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    times = [e["t"] for e in events if e["outcome"] in (429, 200) and e["prompt"] in (digest, None)]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.6


def test_a_hang_is_cut_by_the_timeout_and_retried(server: FakeServer) -> None:
    prompt = "[[fake hang times=1]] slow"
    [result] = gather(server, [prompt], timeout=0.5)
    assert result.ok and result.attempts == 2
    assert result.content == expected_content(prompt)
    stats = server.stats()
    assert stats["hangs"] == 1 and stats["answered"] == 1


def test_a_dropped_connection_is_retried(server: FakeServer) -> None:
    prompt = "[[fake drop times=2]] flaky network"
    [result] = gather(server, [prompt])
    assert result.ok and result.attempts == 3
    assert server.stats()["drops"] == 2


def test_seeded_faults_all_recover_and_nothing_is_answered_twice(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--fail-rate", "0.1", "--drop-rate", "0.05", "--hang-rate", "0.02", "--seed", "7")
    prompts = [f"question {i}" for i in range(300)]
    results = gather(server, prompts, timeout=0.5, concurrency=40)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.content for r in results] == [expected_content(p) for p in prompts]
    stats = server.stats()
    assert stats["answered"] == 300 and stats["answered_twice"] == 0
    assert stats["drops"] > 0 and stats["hangs"] > 0 and stats["by_status"].get("503", 0) > 0


def test_streamed_answers_are_assembled(server: FakeServer) -> None:
    [result] = gather(server, [{"prompt": "stream me", "stream": True, "stream_options": {"include_usage": True}}])
    assert result.ok and result.content == expected_content("stream me")
    assert result.usage is not None and result.usage.completion_tokens == 16


def test_a_bad_key_stops_the_run_after_one_request(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--api-key", "sk-right")
    with pytest.raises(llmgather.RunStopped) as stopped:
        gather(server, [f"q{i}" for i in range(200)], api_key="sk-wrong", concurrency=1)
    assert isinstance(stopped.value.cause, llmgather.AuthenticationError)
    assert server.stats()["requests"] == 1


def test_run_inside_a_running_loop_points_to_gather(server: FakeServer) -> None:
    async def inside() -> None:
        with pytest.raises(llmgather.InputError, match=r"await llmgather\.gather"):
            llmgather.run(["q"], model="openai/fake", api_base=server.url)

    asyncio.run(inside())
