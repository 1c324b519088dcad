"""Other providers' signals through the OpenAI-compatible backend: Groq's 498, `x-should-retry` either way,
OpenAI's cached tokens, and the time to the first token of a streamed answer. Each against the fake provider
process through an engine, so a classification is seen where it matters: retried, or not."""

from __future__ import annotations

from typing import Any

from conftest import FakeServer, complete_once

from llmgather.backends.openai import OpenAIBackend
from llmgather.errors import (
    AuthenticationError,
    PermanentError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    error_for_status,
)
from llmgather.fake import expected_content
from llmgather.types import Result


def complete(server: FakeServer, prompt: str, max_retries: int = 3, **params: Any) -> Result:
    """One request through an engine (no backoff waits) to the fake's chat completions."""
    backend = OpenAIBackend("openai/fake", api_base=server.url, api_key="sk-test")
    return complete_once(backend, prompt, max_retries, **params)


SHOULD_RETRY = [
    (498, None, ServerError),  # Groq: capacity_exceeded
    (400, "true", ServerError),
    (422, "true", ServerError),
    (429, "true", RateLimitError),
    (503, "false", PermanentError),
    (429, "false", PermanentError),
    (400, "false", PermanentError),
    (503, None, ServerError),
    (400, None, PermanentError),
    (401, "false", AuthenticationError),  # already not retried: stays what stops the run
    (401, "true", AuthenticationError),  # a refused key stops the run, whatever a header suggests
    (400, "maybe", PermanentError),  # neither true nor false: the status decides, as OpenAI's SDK does
]


def test_x_should_retry_overrides_the_status() -> None:
    found = [
        (s, h, type(error_for_status(s, "m", headers={} if h is None else {"x-should-retry": h})))
        for s, h, _ in SHOULD_RETRY
    ]
    assert found == SHOULD_RETRY


def test_quota_signals_stop_the_run() -> None:
    credit = "Your credit balance is too low to access the Anthropic API."
    assert type(error_for_status(400, credit, code="invalid_request_error")) is QuotaExceededError
    assert (
        type(error_for_status(429, "m", code="GenerateRequestsPerDayPerProjectPerModel-FreeTier")) is QuotaExceededError
    )
    assert (
        type(error_for_status(429, "m", code="GenerateRequestsPerMinutePerProjectPerModel-FreeTier")) is RateLimitError
    )


def test_groqs_498_is_retried_and_answered(server: FakeServer) -> None:
    prompt = "[[fake status=498 code=capacity_exceeded times=1]] busy"
    result = complete(server, prompt)
    assert result.ok and result.content == expected_content(prompt) and result.attempts == 2
    assert server.stats()["by_status"] == {"200": 1, "498": 1}


def test_should_retry_true_retries_what_the_status_would_not(server: FakeServer) -> None:
    prompt = "[[fake status=400 should_retry=true times=1]] retry me"
    result = complete(server, prompt)
    assert result.ok and result.attempts == 2
    assert server.stats()["by_status"] == {"200": 1, "400": 1}


def test_should_retry_false_stops_what_the_status_would_retry(server: FakeServer) -> None:
    result = complete(server, "[[fake status=503 should_retry=false]] leave me")
    assert result.error is not None and result.error.type == "PermanentError" and result.attempts == 1
    assert server.stats()["requests"] == 1


def test_cached_tokens_are_cache_reads(server: FakeServer) -> None:
    prompt = "[[fake cached=5]] a prompt long enough to have five cached tokens in it at least"
    for stream in (False, True):
        params = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
        result = complete(server, prompt, **params)
        assert result.ok and result.usage is not None
        assert result.usage.cache_read_tokens == 5 and result.usage.prompt_tokens > 5
    assert complete(server, "no cache here").usage.cache_read_tokens == 0  # type: ignore[union-attr]


def test_a_streamed_answer_has_a_time_to_first_token(fake_server: Any) -> None:
    server = fake_server("--latency", "0.05")
    streamed = complete(server, "stream me", stream=True)
    assert streamed.ok and streamed.content == expected_content("stream me")
    assert streamed.ttft_s is not None and 0 < streamed.ttft_s <= streamed.latency_s
    assert complete(server, "whole").ttft_s is None
