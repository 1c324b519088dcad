"""The LiteLLM backend: its own retries are off, so one attempt of ours is one request at the server."""

from __future__ import annotations

import asyncio

import pytest
from conftest import FakeServer, complete_once

import llmgather
from llmgather.backends.litellm import LiteLLMBackend
from llmgather.engine import Engine
from llmgather.fake import expected_content
from llmgather.retry import RetryPolicy
from llmgather.types import Request

pytest.importorskip("litellm")


def run_one(backend: LiteLLMBackend, prompt: str, max_retries: int, **params: object) -> llmgather.Result:
    return complete_once(backend, prompt, max_retries, **params)


def test_answers_through_litellm_openai_compatible_route(server: FakeServer) -> None:
    result = run_one(LiteLLMBackend("openai/fake", api_base=server.url, api_key="k"), "via litellm", 0)
    assert result.ok and result.content == expected_content("via litellm")
    assert result.usage is not None and result.usage.completion_tokens == 16
    assert server.stats()["requests"] == 1


@pytest.mark.parametrize(("max_retries", "expected_requests"), [(0, 1), (2, 3)])
def test_one_attempt_is_one_request_at_the_server(server: FakeServer, max_retries: int, expected_requests: int) -> None:
    backend = LiteLLMBackend("openai/fake", api_base=server.url, api_key="k")
    result = run_one(backend, "[[fake status=503]] down", max_retries)
    assert result.error is not None and result.error.type == "ServerError"
    assert result.attempts == expected_requests
    assert server.stats()["requests"] == expected_requests


def test_a_400_is_not_retried_by_litellm(server: FakeServer) -> None:
    result = run_one(LiteLLMBackend("openai/fake", api_base=server.url, api_key="k"), "[[fake status=400]]", 3)
    assert result.error is not None and result.error.type == "PermanentError"
    assert server.stats()["requests"] == 1


def test_mock_response_needs_no_server() -> None:
    result = run_one(LiteLLMBackend("anthropic/claude-haiku-4-5", api_key="k"), "hi", 0, mock_response="mocked!")
    assert result.ok and result.content == "mocked!"


def test_401_maps_to_a_fatal_error(fake_server) -> None:
    server = fake_server("--api-key", "right")
    backend = LiteLLMBackend("openai/fake", api_base=server.url, api_key="wrong")

    async def go() -> None:
        engine = Engine(backend, retry=RetryPolicy.testing(3))
        try:
            await engine.complete(Request.from_prompt(1, "x"))
        finally:
            await backend.aclose()

    with pytest.raises(llmgather.RunStopped) as stopped:
        asyncio.run(go())
    assert isinstance(stopped.value.cause, llmgather.AuthenticationError)
    assert server.stats()["requests"] == 1
