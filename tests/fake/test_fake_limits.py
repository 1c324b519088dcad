"""The fake provider's limits, pushed past with a raw client: requests, input and output tokens on both
endpoints, with the right 429s and headers, and the peaks it reports held within each limit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from conftest import FakeServer

VERSION = {"anthropic-version": "2023-06-01"}


def messages_body(prompt: str, max_tokens: int = 16, system: Any = None, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-x", "max_tokens": max_tokens, "stream": stream}
    body["messages"] = [{"role": "user", "content": prompt}]
    if system is not None:
        body["system"] = system
    return body


async def burst(url: str, bodies: list[dict[str, Any]], headers: dict[str, str]) -> list[tuple[int, Any, Any]]:
    """Every body posted at once: (status, headers, text) of each answer, in order."""
    async with aiohttp.ClientSession() as session:

        async def one(body: dict[str, Any]) -> tuple[int, Any, Any]:
            async with session.post(url, json=body, headers=headers) as response:
                return response.status, response.headers, await response.text()

        return await asyncio.gather(*(one(body) for body in bodies))


def messages_url(server: FakeServer) -> str:
    return server.url + "/messages"


def test_requests_over_the_rpm_get_429s_with_anthropics_headers(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--rpm", "120")  # 2 a second
    answers = asyncio.run(burst(messages_url(server), [messages_body(f"r{i}") for i in range(8)], VERSION))
    statuses = [status for status, _, _ in answers]
    assert 0 < statuses.count(200) <= 2 + 2 and statuses.count(429) >= 4  # 2 a second, the burst may straddle one
    _, headers, text = next(answer for answer in answers if answer[0] == 429)
    assert '"rate_limit_error"' in text and int(headers["retry-after"]) >= 1
    assert headers["anthropic-ratelimit-requests-limit"] == "120"
    assert 120 - statuses.count(200) <= int(headers["anthropic-ratelimit-requests-remaining"]) < 120
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z") and "request-id" in headers
    assert "anthropic-ratelimit-input-tokens-limit" not in headers  # only the limits that are set
    stats = server.stats()
    assert stats["rate_limited"] == statuses.count(429)
    assert stats["peak_requests_per_second"] <= 2 and stats["peak_requests_per_minute"] <= 120


def test_input_tokens_over_the_limit_are_refused_but_cache_reads_are_not_counted(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server("--input-tpm", "6000")  # 100 a second
    marked = [{"type": "text", "text": "p" * 360, "cache_control": {"type": "ephemeral"}}]  # 90 cached tokens
    url = messages_url(server)
    [(status, _, _)] = asyncio.run(burst(url, [messages_body("the question", system=marked)], VERSION))
    assert status == 200  # wrote 90 tokens to the cache: counted
    # Within the same second, reads of the same prefix fit; the same tokens uncached would not.
    reads = asyncio.run(burst(url, [messages_body(f"question {i}", system=marked) for i in range(3)], VERSION))
    assert [status for status, _, _ in reads] == [200, 200, 200]
    # 93 tokens written (90) or not cached (3), then 2 uncached each: the 90 read each time are not counted.
    remaining = min(int(headers["anthropic-ratelimit-input-tokens-remaining"]) for _, headers, _ in reads)
    assert remaining == 6000 - 93 - 3 * 2
    uncached = asyncio.run(burst(url, [messages_body("q" * 360 + f"{i}") for i in range(4)], VERSION))
    refused = [answer for answer in uncached if answer[0] == 429]
    assert refused and all(int(headers["retry-after"]) >= 1 for _, headers, _ in refused)
    headers = refused[0][1]
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "6000"
    assert headers["anthropic-ratelimit-tokens-limit"] == "6000"  # the only token limit is the tightest
    stats = server.stats()
    assert stats["cache_read_tokens"] == 3 * 90 and stats["cache_write_tokens"] == 90
    assert stats["peak_input_tokens_per_second"] <= 100
    assert stats["peak_input_tokens_per_minute"] <= 6000


def test_output_tokens_are_reserved_at_max_tokens_and_corrected_when_done(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server("--output-tpm", "60000", "--completion-tokens", "4")
    url = messages_url(server)
    [(_, streamed, _)] = asyncio.run(burst(url, [messages_body("s", max_tokens=900, stream=True)], VERSION))
    # A stream's headers go out before its answer is done: they show max_tokens reserved.
    assert int(streamed["anthropic-ratelimit-output-tokens-remaining"]) == 60000 - 900
    [(_, plain, _)] = asyncio.run(burst(url, [messages_body("p", max_tokens=900)], VERSION))
    # After the stream's 4 tokens replaced its 900, and this one's 4 its own.
    assert int(plain["anthropic-ratelimit-output-tokens-remaining"]) == 60000 - 4 - 4


def test_output_tokens_over_the_limit_get_429s_and_the_peaks_stay_within_it(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server("--output-tpm", "1200", "--completion-tokens", "2")  # 20 a second
    bodies = [messages_body(f"o{i}", max_tokens=10) for i in range(12)]
    answers = asyncio.run(burst(messages_url(server), bodies, VERSION))
    statuses = [status for status, _, _ in answers]
    # Corrected from 10 to 2 as each answer ends, six fit a second where two would at max_tokens.
    assert statuses.count(200) >= 6 and statuses.count(429) >= 1
    _, headers, text = next(answer for answer in answers if answer[0] == 429)
    assert '"rate_limit_error"' in text and headers["anthropic-ratelimit-output-tokens-limit"] == "1200"
    stats = server.stats()
    assert stats["peak_output_tokens_per_second"] <= 20 and stats["peak_output_tokens_per_minute"] <= 1200


def test_limits_apply_to_chat_completions_too(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--output-tpm", "1200", "--rpm", "6000", "--completion-tokens", "2")
    bodies = [{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": f"c{i}"}]} for i in range(12)]
    answers = asyncio.run(burst(server.url + "/chat/completions", bodies, {}))
    statuses = [status for status, _, _ in answers]
    assert statuses.count(200) >= 6 and statuses.count(429) >= 1
    _, headers, text = next(answer for answer in answers if answer[0] == 429)
    assert '"rate_limit_exceeded"' in text and "retry-after" in headers
    assert headers["x-ratelimit-limit-requests"] == "6000" and "x-ratelimit-reset-requests" in headers
    assert server.stats()["peak_output_tokens_per_second"] <= 20


def test_a_clock_minute_window_admits_a_burst_and_sends_no_reset(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--window", "clock-minute", "--rpm", "5", "--tpm", "100000")
    if time.time() % 60 > 57:  # the minute would turn mid-test: start in the next one
        time.sleep(60 - time.time() % 60 + 0.1)
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"c{i}"}]} for i in range(5)]
    url = server.url + "/chat/completions"
    answers = asyncio.run(burst(url, bodies, {}))
    assert [status for status, _, _ in answers] == [200] * 5  # a sliding window would take 1 a second
    [(status, headers, _)] = asyncio.run(burst(url, [bodies[0]], {}))
    assert status == 429 and int(headers["retry-after"]) <= 61
    assert headers["x-ratelimit-limit-requests"] == "5" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-tokens"] == "100000" and int(headers["x-ratelimit-remaining-tokens"]) < 100000
    assert not [name for name in headers if name.lower().startswith("x-ratelimit-reset")]


def test_the_help_names_every_new_flag() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "llmgather.fake", "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for flag in ("--input-tpm", "--output-tpm", "--window", "--overload-rate", "--credit-after", "--daily-quota"):
        assert flag in shown
