"""Whole runs against the fake provider process: each budget held on its own, a clock-minute allowance used at once,
refusals that are one prompt's own, and a run told its token limit that starts at once.

Assertions are on what the provider counted (its peaks, its 429s, how many it had in flight) and on times only
as generous multiples of the physical bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from conftest import FakeServer

import llmgather
from llmgather.fake import expected_content


def run(server: FakeServer, prompts: list[Any], model: str = "openai/fake", **options: Any) -> list[llmgather.Result]:
    return llmgather.run(prompts, model=model, api_base=server.url, api_key="k", timeout=20.0, **options)


def test_an_output_token_limited_run_holds_that_limit_alone(fake_server: Callable[..., FakeServer]) -> None:
    # 60,000 output tokens a minute is 1,000 a second; each request reserves 50 and writes 16. Input and requests
    # are far from their limits: the output budget alone holds the run, and the provider's peaks stay in it.
    server = fake_server("--output-tpm", "60000", "--input-tpm", "10000000", "--rpm", "100000", "--latency", "0.05")
    prompts = [{"prompt": f"out {i}", "max_tokens": 50} for i in range(240)]
    started = time.monotonic()
    results = run(server, prompts, model="anthropic/claude-fake", concurrency=100, output_tpm=60000)
    elapsed = time.monotonic() - started
    assert [r.content for r in results] == [expected_content(p["prompt"]) for p in prompts]
    stats = server.stats()
    assert stats["rate_limited"] <= 3, stats  # 1% of 240
    assert stats["peak_output_tokens_per_second"] <= 1000, stats
    assert stats["peak_output_tokens_per_minute"] <= 60000, stats
    # Settled at the 16 used (about 4 s in all), not held at the 50 reserved (12 s).
    assert elapsed < 2 * 240 * 50 / 1000, elapsed


def test_an_input_token_limited_run_holds_that_limit(fake_server: Callable[..., FakeServer]) -> None:
    # 120,000 input tokens a minute is 2,000 a second; each prompt is about 100 tokens: 20 a second.
    server = fake_server("--input-tpm", "120000", "--latency", "0.05")
    prompts = [f"in {i} " + "word " * 80 for i in range(80)]
    started = time.monotonic()
    results = run(server, prompts, model="anthropic/claude-fake", concurrency=50, input_tpm=120000)
    elapsed = time.monotonic() - started
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    stats = server.stats()
    assert stats["rate_limited"] <= 1, stats
    assert stats["peak_input_tokens_per_second"] <= 2000, stats
    bound = sum(len(p) // 4 for p in prompts) / 2000
    assert elapsed < 3 * bound + 5, (elapsed, bound)


def test_behind_a_clock_minute_limit_a_small_job_finishes_at_latency_speed(
    fake_server: Callable[..., FakeServer],
) -> None:
    # LiteLLM Proxy's way: per clock minute, remaining headers without a reset. The 400 requests fit what is
    # left of the minute: they go as fast as the concurrency allows (4 rounds of 0.2 s), not paced evenly over
    # the minute (before: about 24 s, 1,000 a minute).
    server = fake_server("--window", "clock-minute", "--rpm", "1000", "--latency", "0.2")
    prompts = [f"minute {i}" for i in range(400)]
    started = time.monotonic()
    results = run(server, prompts, concurrency=100)
    elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    assert server.stats()["rate_limited"] == 0
    assert elapsed < 8.0, elapsed  # the physical bound is 0.8 s


def test_two_always_refused_prompts_do_not_slow_the_rest(fake_server: Callable[..., FakeServer]) -> None:
    # Those two get a 429 with no rate-limit header every time, while everything else goes through: their
    # own problem. Before, the run took them as the shared limit and slowed from 0.7 s to 26 s.
    server = fake_server("--latency", "0.02")
    prompts = [f"fine {i}" for i in range(1000)]
    prompts[10] = "[[fake status=429]] refused"
    prompts[600] = "[[fake status=429]] refused too"
    started = time.time()
    results = run(server, prompts, concurrency=100, max_retries=3)
    answered = [r for r in results if r.ok]
    assert len(answered) == 998
    assert all(not r.ok and r.error is not None and r.error.status == 429 for r in (results[10], results[600]))
    last = max(r.finished_at for r in answered if r.finished_at is not None)
    assert last - started < 8.0, last - started  # the physical bound is 0.2 s


def test_told_its_token_limit_the_run_starts_at_once(fake_server: Callable[..., FakeServer]) -> None:
    # Before, the first request went alone and every other waited for its answer: a whole answer time lost.
    server = fake_server("--latency", "2.0")
    prompts = [f"at once {i}" for i in range(50)]
    results = run(server, prompts, concurrency=50, rpm=1_000_000, tpm=100_000_000)
    assert all(r.ok for r in results)
    assert server.stats()["max_in_flight"] == 50
    finished = [r.finished_at for r in results if r.finished_at is not None]
    assert max(finished) - min(finished) < 1.0  # all answered together, none an answer time before the rest


def test_each_anthropic_limit_is_learned_from_its_own_headers(fake_server: Callable[..., FakeServer]) -> None:
    # Nothing told: the first answers' anthropic-ratelimit-* headers say 60,000 output tokens a minute and
    # 10,000,000 input tokens. Read as the combined limit (as before), the input one left output unpaced.
    server = fake_server("--output-tpm", "60000", "--input-tpm", "10000000", "--rpm", "50000", "--latency", "0.05")
    prompts = [{"prompt": f"learn {i}", "max_tokens": 50} for i in range(300)]

    async def go() -> tuple[list[llmgather.Result], llmgather.EngineStats]:
        options = {"api_base": server.url, "api_key": "k", "concurrency": 50}
        async with llmgather.Client("anthropic/claude-fake", **options) as client:
            return [result async for result in client.map(prompts)], client.stats()

    results, stats = asyncio.run(go())
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    limiter = stats.limiter
    assert (limiter.rpm_limit, limiter.tpm_limit) == (50000, None)
    assert (limiter.input_tpm_limit, limiter.output_tpm_limit) == (10_000_000, 60000)
    # The 50 that go before the first answer reserve 2,500 in a second that holds 1,000: about 30 are refused
    # once, and teach the limit; after that, 3% of 300 at most.
    assert server.stats()["rate_limited"] <= 30 + 9, server.stats()
