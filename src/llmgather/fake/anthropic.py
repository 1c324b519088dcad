"""Anthropic's Messages API on the fake provider: `POST /v1/messages`, plain and streamed, as Anthropic documents it.

The answer is the one the chat completions side gives to the same conversation written OpenAI-style (the
system prompt first), so a caller checks answers alike on both sides. Prompt caching: the text up to and
including the last block marked `cache_control` is written to the cache the first time it is seen and read
after; cache reads do not count against the input-token limit, writes do. Output tokens are reserved at
`max_tokens` and corrected to the real output when the answer is done.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmgather.fake.common import Refusal, count_tokens, expected_content, prompt_digest
from llmgather.fake.limits import rfc3339_after

if TYPE_CHECKING:
    from llmgather.fake.server import FakeProvider

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STATUS_OF_TYPE = {kind: status for status, kind in ERROR_TYPES.items()}
_STREAM_ERROR_AFTER = 3
"""Deltas a `stream_error` stream sends before its error event."""


class _Invalid(ValueError):
    """The request body breaks the API's schema; the message is the API's."""


@dataclass(slots=True)
class _Conversation:
    model: str
    max_tokens: int
    text: str
    cached_prefix: str | None
    stream: bool


async def messages(provider: FakeProvider, request: web.Request) -> web.StreamResponse:
    config = provider.config
    # The key comes as x-api-key, or as a bearer token (what the official SDK sends since 2.x).
    bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if config.api_key and config.api_key not in (request.headers.get("x-api-key"), bearer):
        return error(provider, Refusal(401, "invalid x-api-key"))
    if "anthropic-version" not in request.headers:
        return error(provider, Refusal(400, "anthropic-version: header is required"))
    try:
        conversation = _parse(json.loads(await request.read()))
    except ValueError as invalid:  # _Invalid, or a body that is not JSON
        said = str(invalid) if isinstance(invalid, _Invalid) else "There was an issue with the JSON body."
        return error(provider, Refusal(400, said))
    if config.models and conversation.model not in config.models:
        return error(provider, Refusal(404, f"model: {conversation.model}"))
    ask = provider.begin(request, conversation.text, conversation.model)
    stream_error = ask.directive.get("stream_error") if ask.forced else None
    if stream_error and not conversation.stream:
        return error(provider, Refusal(STATUS_OF_TYPE.get(stream_error, 500), f"forced {stream_error}"))
    total = count_tokens(conversation.text)
    cache_key, read, written = _cache(provider, conversation)
    input_tokens = total - read - written
    admitted = await provider.admit(request, ask, input_tokens + written, conversation.max_tokens)
    if isinstance(admitted, Refusal):
        return error(provider, admitted)
    if cache_key is not None:
        provider.cached_prefixes.add(cache_key)
    output_tokens = min(conversation.max_tokens, config.completion_tokens)
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
    message = {
        "id": f"msg_fake{ask.digest}{ask.seen:04d}",
        "type": "message",
        "role": "assistant",
        "model": conversation.model,
        "content": [{"type": "text", "text": expected_content(conversation.text, output_tokens)}],
        "stop_reason": "max_tokens" if output_tokens < config.completion_tokens else "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }
    if conversation.stream:
        response, sent = await _stream(provider, request, message, stream_error)
        provider.settle(ask, admitted, sent, answered=stream_error is None)
        if stream_error is None:
            _count_cache(provider, read, written)
        else:
            provider.stats.stream_errors += 1
        return response
    provider.settle(ask, admitted, output_tokens)
    _count_cache(provider, read, written)
    return web.json_response(message, headers=_headers(provider))


def _count_cache(provider: FakeProvider, read: int, written: int) -> None:
    provider.stats.cache_read_tokens += read
    provider.stats.cache_write_tokens += written


def _parse(body: Any) -> _Conversation:
    """The conversation in a Messages request, or _Invalid with the API's kind of message."""
    if not isinstance(body, dict):
        raise _Invalid("The request body must be a JSON object.")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise _Invalid(f"{name}: Field required")
    model, max_tokens, messages = body["model"], body["max_tokens"], body["messages"]
    if not isinstance(model, str) or not model:
        raise _Invalid("model: Input should be a valid string")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _Invalid("max_tokens: Input should be greater than or equal to 1")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    parts: list[str] = []
    cached_upto = 0
    system = body.get("system")
    if system is not None:
        cached_upto = _add_content(parts, system, "system", cached_upto)
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _Invalid(f"messages.{i}.content: Field required")
        cached_upto = _add_content(parts, message["content"], f"messages.{i}.content", cached_upto)
    prefix = "\n".join(parts[:cached_upto]) if cached_upto else None
    return _Conversation(model, max_tokens, "\n".join(parts), prefix, bool(body.get("stream")))


def _add_content(parts: list[str], content: Any, where: str, cached_upto: int) -> int:
    """Append the content's texts (an image adds an empty one, as `prompt_text` does); returns the cache mark."""
    if isinstance(content, str):
        parts.append(content)
        return cached_upto
    if not isinstance(content, list):
        raise _Invalid(f"{where}: Input should be a valid string or list of content blocks")
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        elif kind == "image" and isinstance(block.get("source"), dict) and where != "system":
            parts.append("")
        else:
            raise _Invalid(f"{where}.{j}: Input tag {kind!r} found does not match any of the expected tags")
        if block.get("cache_control") is not None:
            cached_upto = len(parts)
    return cached_upto


def _cache(provider: FakeProvider, conversation: _Conversation) -> tuple[str | None, int, int]:
    """The cache key of the marked prefix (None if none), and its tokens read and written."""
    if conversation.cached_prefix is None:
        return None, 0, 0
    key = prompt_digest(f"{conversation.model}\n{conversation.cached_prefix}")
    tokens = min(count_tokens(conversation.cached_prefix), count_tokens(conversation.text))
    if key in provider.cached_prefixes:
        return key, tokens, 0
    return key, 0, tokens


async def _stream(
    provider: FakeProvider, request: web.Request, message: dict[str, Any], fail: str | None
) -> tuple[web.StreamResponse, int]:
    """Send the answer as Anthropic's event sequence, cut by an error event if `fail`; and the tokens sent."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **_headers(provider)})
    await response.prepare(request)

    async def send(event: str, data: dict[str, Any]) -> None:
        await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

    usage = message["usage"]
    opening = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    await send("message_start", {"type": "message_start", "message": opening})
    await send(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    await send("ping", {"type": "ping"})
    words = message["content"][0]["text"].split(" ")
    for i, word in enumerate(words):
        if fail is not None and i == _STREAM_ERROR_AFTER:
            await send("error", _error_body(fail, "Overloaded" if fail == "overloaded_error" else f"forced {fail}"))
            await response.write_eof()
            return response, i
        delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
        await send("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    await send("content_block_stop", {"type": "content_block_stop", "index": 0})
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    await send(
        "message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": usage["output_tokens"]}}
    )
    await send("message_stop", {"type": "message_stop"})
    await response.write_eof()
    return response, int(usage["output_tokens"])


def error(provider: FakeProvider, refusal: Refusal) -> web.Response:
    """A refusal in Anthropic's shape, with its rate-limit headers and a request id."""
    provider.stats.by_status[refusal.status] += 1
    headers = _headers(provider)
    if refusal.body is not None:  # a third provider's shape, sent as it is
        return web.json_response(refusal.body, status=refusal.status, headers={"request-id": headers["request-id"]})
    kind = ERROR_TYPES.get(refusal.status) or ("api_error" if refusal.status >= 500 else "invalid_request_error")
    if refusal.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(refusal.retry_after)))
    if refusal.should_retry is not None:
        headers["x-should-retry"] = refusal.should_retry
    body = {**_error_body(kind, refusal.message), "request_id": headers["request-id"]}
    return web.json_response(body, status=refusal.status, headers=headers)


def _error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _headers(provider: FakeProvider) -> dict[str, str]:
    """A request id, and `anthropic-ratelimit-*` for each limit set; `tokens` is the most restrictive one."""
    headers = {"request-id": f"req_fake{uuid.uuid4().hex[:24]}"}
    if not provider.config.limit_headers:
        return headers
    states = provider.budgets.states()
    for name in ("requests", "input-tokens", "output-tokens"):
        if name in states:
            states_of = states[name]
            headers[f"anthropic-ratelimit-{name}-limit"] = str(states_of.limit)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(states_of.remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = rfc3339_after(states_of.reset_s)
    tokens = [states[name] for name in ("tokens", "input-tokens", "output-tokens") if name in states]
    if tokens:
        tightest = min(tokens, key=lambda state: state.remaining)
        headers["anthropic-ratelimit-tokens-limit"] = str(tightest.limit)
        headers["anthropic-ratelimit-tokens-remaining"] = str(tightest.remaining)
        headers["anthropic-ratelimit-tokens-reset"] = rfc3339_after(tightest.reset_s)
    return headers
