"""The native Anthropic backend: the request as Anthropic wants it, the answer, the stream and the errors as
ours. Edge cases against an in-process server that says exactly what a test needs; whole runs against the
fake provider process are in test_providers_cli.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from llmgather.backends import make_backend
from llmgather.backends.anthropic import DEFAULT_MAX_TOKENS, AnthropicBackend, messages_body
from llmgather.errors import (
    AuthenticationError,
    ConnectError,
    ModelNotFoundError,
    PermanentError,
    QuotaExceededError,
    RateLimitError,
    RequestError,
    ServerError,
)
from llmgather.types import Request, Response

KEY = "sk-ant-api03-secret-key-for-tests-only"
CREDIT = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or"
    " purchase credits."
)


def body_of(messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    return messages_body("claude-x", Request(id=1, messages=messages, params=params))


# -- the request --------------------------------------------------------------------------------------


def test_system_messages_are_lifted_and_joined() -> None:
    body = body_of(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Be kind."},
            {"role": "assistant", "content": "Hello"},
        ]
    )
    assert body["system"] == "Be brief.\nBe kind."
    assert body["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert body["model"] == "claude-x" and body["max_tokens"] == DEFAULT_MAX_TOKENS


def test_a_system_prompt_marked_for_the_cache_keeps_its_blocks() -> None:
    marked = {"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}
    body = body_of([{"role": "system", "content": [marked]}, {"role": "system", "content": "More."}, user("q")])
    assert body["system"] == [marked, {"type": "text", "text": "More."}]
    assert "system" not in body_of([user("q")])


def test_images_become_anthropic_image_blocks() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {
            "type": "image_url",
            "image_url": {"url": "https://example.com/cat.jpg"},
            "cache_control": {"type": "ephemeral"},
        },
    ]
    [message] = body_of([{"role": "user", "content": content}])["messages"]
    assert message["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {
            "type": "image",
            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
            "cache_control": {"type": "ephemeral"},
        },
    ]


def test_an_image_data_url_that_is_not_base64_is_refused_for_that_request() -> None:
    content = [{"type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}]
    with pytest.raises(PermanentError, match="base64"):
        body_of([{"role": "user", "content": content}])


def test_a_message_marked_for_the_cache_marks_its_last_block() -> None:
    [message] = body_of([{"role": "user", "content": "doc", "cache_control": {"type": "ephemeral"}}])["messages"]
    assert message["content"] == [{"type": "text", "text": "doc", "cache_control": {"type": "ephemeral"}}]


def test_parameters_are_renamed_passed_or_dropped() -> None:
    body = body_of(
        [user("q")],
        max_completion_tokens=77,
        stop="END",
        temperature=0.2,
        top_p=0.9,
        user="u-1",
        metadata={"tag": "x"},
        stream=True,
        stream_options={"include_usage": True},
        n=1,
        seed=3,
        cache_control={"type": "ephemeral"},
    )
    assert body == {
        "model": "claude-x",
        "max_tokens": 77,
        "messages": [user("q")],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "metadata": {"user_id": "u-1", "tag": "x"},
        "stream": True,
        "cache_control": {"type": "ephemeral"},
    }
    assert body_of([user("q")], max_tokens=5, stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert body_of([user("q")], max_tokens=5)["max_tokens"] == 5


def test_a_top_level_system_parameter_joins_the_system_messages() -> None:
    # It used to replace them: "Be terse." was lost.
    body = body_of([{"role": "system", "content": "Be terse."}, user("q")], system="You are a judge.")
    assert body["system"] == "You are a judge.\nBe terse."


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}],
        [{"role": "tool", "tool_call_id": "c1", "content": "42"}],
    ],
)
def test_openai_tool_messages_are_refused_for_that_request_not_sent_mangled(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(PermanentError, match="tool_use and tool_result"):
        body_of(messages)


def test_more_than_one_answer_a_request_is_refused_not_dropped() -> None:
    with pytest.raises(PermanentError, match="n=3"):
        body_of([user("q")], n=3)


@pytest.mark.parametrize("base", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"])
def test_the_api_base_is_the_host_root_or_ends_in_v1(base: str) -> None:
    backend = AnthropicBackend("anthropic/claude-x", api_base=base)
    assert backend.endpoint == "http://h:1" and backend._url == "http://h:1/v1/messages"
    assert backend.model == "claude-x"


def test_anthropic_models_get_the_native_backend() -> None:
    backend = make_backend("anthropic/claude-x", api_base=None, api_key="k", max_connections=4)
    assert isinstance(backend, AnthropicBackend) and backend.endpoint == "https://api.anthropic.com"


# -- against an in-process server ---------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def send_to(handler: Handler, request: Request, key: str | None = KEY) -> Response:
    """One `send` of the backend to a server on 127.0.0.1 answering with `handler`."""

    async def go() -> Response:
        app = web.Application()
        app.router.add_post("/v1/messages", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        backend = AnthropicBackend("anthropic/claude-x", api_base=f"http://127.0.0.1:{port}", api_key=key)
        try:
            return await backend.send(request)
        finally:
            await backend.aclose()
            await runner.cleanup()

    return asyncio.run(go())


def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return handle


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def message(text: str = "hi there", stop: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": text}],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 4, **usage},
    }


def test_the_request_carries_the_key_and_version_headers() -> None:
    seen: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        seen["headers"], seen["body"] = dict(request.headers), await request.json()
        return web.json_response(message())

    response = send_to(handle, Request.from_prompt(1, "hello", temperature=0))
    assert seen["headers"]["x-api-key"] == KEY and seen["headers"]["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in seen["headers"]
    assert seen["body"] == {
        "model": "claude-x",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [user("hello")],
        "temperature": 0,
    }
    assert response.content == "hi there" and response.finish_reason == "stop"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls")],
)
def test_stop_reasons_are_finish_reasons(stop: str, finish: str) -> None:
    assert send_to(answering(200, message(stop=stop)), Request.from_prompt(1, "x")).finish_reason == finish


def test_usage_counts_cache_reads_and_writes_as_input() -> None:
    body = message(cache_creation_input_tokens=100, cache_read_input_tokens=1000)
    usage = send_to(answering(200, body), Request.from_prompt(1, "x")).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (1110, 1000, 100)
    assert (usage.completion_tokens, usage.total_tokens, usage.uncached_prompt_tokens) == (4, 1114, 10)


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def streaming(payload: bytes) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "request-id": "req_1"})
        await response.prepare(request)
        await response.write(payload)
        await response.write_eof()
        return response

    return handle


START = {
    "type": "message_start",
    "message": {
        **message(),
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5},
    },
}
BLOCK = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}


def delta(text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


def test_a_stream_is_assembled_with_its_usage_and_first_token_time() -> None:
    payload = sse(
        START,
        BLOCK,
        {"type": "ping"},
        delta("Hello"),
        delta(", world"),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 7},
        },
        {"type": "message_stop"},
    )
    response = send_to(streaming(payload), Request.from_prompt(1, "x", stream=True))
    assert response.content == "Hello, world" and response.finish_reason == "length"
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.cache_read_tokens, response.usage.completion_tokens) == (
        30,
        5,
        7,
    )
    assert response.ttft_s is not None and response.ttft_s > 0
    assert response.headers["request-id"] == "req_1"


def test_an_error_event_after_the_200_is_a_transient_failure_of_the_attempt() -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(ServerError) as raised:
        send_to(streaming(sse(START, BLOCK, delta("Hel"), overloaded)), Request.from_prompt(1, "x", stream=True))
    assert raised.value.status == 529 and "overloaded_error" in raised.value.message


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("billing_error", QuotaExceededError),
        ("timeout_error", ServerError),
        ("invalid_request_error", PermanentError),  # was retried as a server error
    ],
)
def test_an_error_event_mid_stream_is_classified_by_its_type(kind: str, expected: type[RequestError]) -> None:
    event = {"type": "error", "error": {"type": kind, "message": "no"}}
    with pytest.raises(RequestError) as raised:
        send_to(streaming(sse(START, BLOCK, delta("Hel"), event)), Request.from_prompt(1, "x", stream=True))
    assert type(raised.value) is expected


def test_a_stream_cut_before_message_stop_is_a_dropped_connection() -> None:
    with pytest.raises(ConnectError, match="message_stop"):
        send_to(streaming(sse(START, BLOCK, delta("Hel"))), Request.from_prompt(1, "x", stream=True))


@pytest.mark.parametrize(
    ("status", "kind", "text", "expected"),
    [
        (529, "overloaded_error", "Overloaded", ServerError),
        (500, "api_error", "Internal", ServerError),
        (401, "authentication_error", "invalid x-api-key", AuthenticationError),
        (403, "permission_error", "no access", AuthenticationError),
        (400, "invalid_request_error", CREDIT, QuotaExceededError),
        (400, "invalid_request_error", "messages: field required", PermanentError),
        (413, "request_too_large", "Request exceeds the maximum size", PermanentError),
        (404, "not_found_error", "model: claude-nope", ModelNotFoundError),
        (404, "not_found_error", "Not Found", PermanentError),
        (402, "billing_error", "Your payment method was declined", QuotaExceededError),
        (504, "timeout_error", "Request timed out", ServerError),
    ],
)
def test_errors_are_classified(status: int, kind: str, text: str, expected: type[RequestError]) -> None:
    with pytest.raises(RequestError) as raised:
        send_to(answering(status, error_body(kind, text), {"request-id": "req_9"}), Request.from_prompt(1, "x"))
    assert type(raised.value) is expected
    assert raised.value.status == status and raised.value.code == kind and raised.value.message == text
    assert raised.value.headers["request-id"] == "req_9"


def test_a_429_waits_its_retry_after_and_carries_the_limit_headers() -> None:
    headers = {"retry-after": "7", "anthropic-ratelimit-output-tokens-remaining": "0"}
    with pytest.raises(RateLimitError) as raised:
        send_to(answering(429, error_body("rate_limit_error", "slow down"), headers), Request.from_prompt(1, "x"))
    assert raised.value.retry_after == 7.0
    assert raised.value.headers["anthropic-ratelimit-output-tokens-remaining"] == "0"


def test_the_key_never_appears_in_an_error_even_when_the_server_echoes_it() -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        said = f"bad key {request.headers['x-api-key']} (x-api-key: {request.headers['x-api-key']})"
        return web.json_response(error_body(said, said), status=400)

    with pytest.raises(PermanentError) as raised:
        send_to(echo, Request.from_prompt(1, "x"))
    assert KEY not in str(raised.value) and KEY not in (raised.value.code or "")
    assert "bad key" in raised.value.message

    echoed = {"type": "error", "error": {"type": "overloaded_error", "message": f"key was {KEY}"}}
    with pytest.raises(ServerError) as mid_stream:
        send_to(streaming(sse(START, echoed)), Request.from_prompt(1, "x", stream=True))
    assert KEY not in str(mid_stream.value)
