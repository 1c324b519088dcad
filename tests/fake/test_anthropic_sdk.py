"""The fake provider's /v1/messages held to the official `anthropic` SDK: strict parsing, streams, errors."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic
import pytest
from conftest import FakeServer

from llmgather.fake import expected_content, prompt_text

KEY = "sk-ant-api03-fake-sdk-test-key"
MODEL = "claude-fake-model"
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}


def root(server: FakeServer) -> str:
    return server.url.removesuffix("/v1")


def client(server: FakeServer, key: str = KEY) -> anthropic.AsyncAnthropic:
    # Strict: every field of every answer is validated against the SDK's typed models, none merely copied.
    return anthropic.AsyncAnthropic(base_url=root(server), api_key=key, max_retries=0, _strict_response_validation=True)


def test_a_plain_message_with_system_image_and_cache_control_parses_strictly(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server("--api-key", KEY, "--rpm", "600", "--input-tpm", "60000", "--output-tpm", "60000")
    system = [{"type": "text", "text": "You are terse. " * 20, "cache_control": {"type": "ephemeral"}}]
    content: list[dict[str, Any]] = [{"type": "text", "text": "Describe the picture."}, IMAGE]
    same_openai_style = [{"role": "system", "content": system}, {"role": "user", "content": content}]

    async def scenario() -> tuple[Any, anthropic.types.Message, anthropic.types.Message]:
        async with client(server) as claude:
            raw = await claude.messages.with_raw_response.create(
                model=MODEL, max_tokens=64, system=system, messages=[{"role": "user", "content": content}]
            )
            first = await raw.parse()
            again = await claude.messages.create(
                model=MODEL, max_tokens=64, system=system, messages=[{"role": "user", "content": content}]
            )
            return raw.headers, first, again

    headers, first, again = asyncio.run(scenario())
    assert first.type == "message" and first.role == "assistant" and first.model == MODEL
    assert first.id.startswith("msg_") and first.stop_reason == "end_turn" and first.stop_sequence is None
    assert [block.type for block in first.content] == ["text"]
    assert first.content[0].text == expected_content(prompt_text(same_openai_style), 16)  # type: ignore[union-attr]
    cached = len("You are terse. " * 20) // 4
    assert first.usage.cache_creation_input_tokens == cached and first.usage.cache_read_input_tokens == 0
    assert again.usage.cache_read_input_tokens == cached and again.usage.cache_creation_input_tokens == 0
    assert first.usage.input_tokens == again.usage.input_tokens > 0 and first.usage.output_tokens == 16
    assert headers["request-id"].startswith("req_")
    for name in ("requests", "input-tokens", "output-tokens", "tokens"):
        assert int(headers[f"anthropic-ratelimit-{name}-limit"]) > 0
        assert int(headers[f"anthropic-ratelimit-{name}-remaining"]) >= 0
        reset = datetime.datetime.strptime(headers[f"anthropic-ratelimit-{name}-reset"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(reset.replace(tzinfo=datetime.UTC) - datetime.datetime.now(datetime.UTC)).total_seconds() < 120


def test_both_stream_forms_give_the_documented_events_and_the_same_text(server: FakeServer) -> None:
    messages = [{"role": "user", "content": "Tell me something."}]
    expected = expected_content(prompt_text(messages), 16)

    async def scenario() -> tuple[list[str], anthropic.types.Message, list[Any], anthropic.types.Message]:
        async with client(server) as claude:
            async with claude.messages.stream(model=MODEL, max_tokens=100, messages=messages) as stream:
                kinds = [event.type async for event in stream]
                final = await stream.get_final_message()
            raw_events = [
                event
                async for event in await claude.messages.create(
                    model=MODEL, max_tokens=5, messages=messages, stream=True
                )
            ]
            short = await claude.messages.create(model=MODEL, max_tokens=5, messages=messages)
            return kinds, final, raw_events, short

    kinds, final, raw_events, short = asyncio.run(scenario())
    assert [k for k in kinds if k != "text"] == [
        "message_start", "content_block_start", *["content_block_delta"] * 16,
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert final.content[0].text == expected and final.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert final.usage.output_tokens == 16
    types = [event.type for event in raw_events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    text = "".join(e.delta.text for e in raw_events if e.type == "content_block_delta")
    assert text == short.content[0].text == expected_content(prompt_text(messages), 5)  # type: ignore[union-attr]
    delta = raw_events[-2]
    assert delta.delta.stop_reason == "max_tokens" == short.stop_reason and delta.usage.output_tokens == 5


def test_errors_map_to_the_sdks_classes(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--api-key", KEY, "--credit-after", "1")

    async def failure(prompt: str, key: str = KEY) -> anthropic.APIStatusError:
        async with client(server, key) as claude:
            with pytest.raises(anthropic.APIStatusError) as caught:
                await claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": prompt}])
            return caught.value

    async def scenario() -> list[anthropic.APIStatusError]:
        return [
            await failure("[[fake status=429 retry_after=1.2]]"),
            await failure("[[fake status=529]]"),
            await failure("[[fake status=413]]"),
            await failure("hello", key="sk-ant-wrong"),
            await failure("[[fake status=500 should_retry=false]]"),
        ]

    limited, overloaded, too_large, unauthorized, server_error = asyncio.run(scenario())
    assert isinstance(limited, anthropic.RateLimitError) and limited.response.headers["retry-after"] == "2"
    assert isinstance(overloaded, anthropic.InternalServerError) and overloaded.status_code == 529
    assert type(overloaded).__name__ == "OverloadedError"
    assert isinstance(too_large, anthropic.APIStatusError) and too_large.status_code == 413
    assert isinstance(unauthorized, anthropic.AuthenticationError)
    assert isinstance(server_error, anthropic.InternalServerError)
    assert server_error.response.headers["x-should-retry"] == "false"
    kinds = [error.body["error"]["type"] for error in (limited, overloaded, too_large, unauthorized)]  # type: ignore[index]
    assert kinds == ["rate_limit_error", "overloaded_error", "request_too_large", "authentication_error"]
    assert all(error.response.headers["request-id"].startswith("req_") for error in (limited, unauthorized))

    async def after_credit() -> anthropic.APIStatusError:
        async with client(server) as claude:
            await claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "paid"}])
        return await failure("now unpaid")

    credit = asyncio.run(after_credit())
    assert isinstance(credit, anthropic.BadRequestError)
    assert "credit balance is too low" in credit.message


def test_the_overload_rate_answers_529s_the_sdk_raises_as_overloaded(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--overload-rate", "1.0")

    async def scenario() -> anthropic.APIStatusError:
        async with client(server) as claude:
            with pytest.raises(anthropic.InternalServerError) as caught:
                await claude.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}])
            return caught.value

    assert asyncio.run(scenario()).status_code == 529
    assert server.stats()["by_status"] == {"529": 1}


def test_a_mid_stream_error_raises_in_the_sdks_stream_and_the_retry_is_answered_once(server: FakeServer) -> None:
    messages = [{"role": "user", "content": "cut me [[fake stream_error=overloaded_error times=1]]"}]

    async def scenario() -> tuple[list[str], anthropic.APIStatusError, anthropic.types.Message]:
        seen: list[str] = []
        async with client(server) as claude:
            with pytest.raises(anthropic.APIStatusError) as caught:
                async with claude.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
                    async for event in stream:
                        seen.append(event.type)
            retried = await claude.messages.create(model=MODEL, max_tokens=64, messages=messages)
            return seen, caught.value, retried

    seen, error, retried = asyncio.run(scenario())
    assert seen[:2] == ["message_start", "content_block_start"] and "message_stop" not in seen
    assert "content_block_delta" in seen
    assert error.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert retried.content[0].text == expected_content(prompt_text(messages), 16)  # type: ignore[union-attr]
    stats = server.stats()
    assert stats["stream_errors"] == 1 and stats["answered"] == 1 and stats["answered_twice"] == 0


def test_the_api_refuses_a_request_without_its_version_header_or_max_tokens(server: FakeServer) -> None:
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

    async def post(payload: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{root(server)}/v1/messages", json=payload, headers=headers) as response,
        ):
            return response.status, await response.json()

    version = {"anthropic-version": "2023-06-01"}
    no_version = asyncio.run(post(body, {}))
    no_max_tokens = asyncio.run(post({k: v for k, v in body.items() if k != "max_tokens"}, version))
    bad_role = asyncio.run(post({**body, "messages": [{"role": "system", "content": "x"}]}, version))
    fine = asyncio.run(post(body, version))
    for status, answer in (no_version, no_max_tokens, bad_role):
        assert status == 400 and answer["type"] == "error"
        assert answer["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in no_max_tokens[1]["error"]["message"]
    assert fine[0] == 200
