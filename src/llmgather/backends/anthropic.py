"""Native Anthropic Messages over aiohttp: our OpenAI-style requests translated to `POST /v1/messages`,
and Anthropic's answers, streams and errors translated back."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from llmgather.backends.base import count, quote
from llmgather.backends.http import CODE_CHARS, HttpBackend
from llmgather.backends.redact import redact
from llmgather.config import ANTHROPIC_API_BASE, ANTHROPIC_MAX_TOKENS, provider_model_name
from llmgather.errors import (
    ConnectError,
    PermanentError,
    RequestError,
    ServerError,
    error_for_status,
)
from llmgather.types import Message, Request, Response, Usage

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = ANTHROPIC_MAX_TOKENS

_PARAMS: dict[str, str | None] = {
    "max_tokens": None,  # both read by _max_tokens
    "max_completion_tokens": None,
    "stop": "stop_sequences",
    "user": None,  # sent as metadata.user_id
    "n": None,
    "stream_options": None,
    "store": None,
    "seed": None,
    "logprobs": None,
    "top_logprobs": None,
    "logit_bias": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "parallel_tool_calls": None,
    "prompt_cache_key": None,  # Anthropic caches what cache_control marks
    "system": None,  # lifted with the system messages
    "timeout": None,
    "request_timeout": None,
}
"""OpenAI's parameter names that Anthropic spells otherwise, or would refuse though they leave the answer
much the same (None: not sent). Any other parameter (temperature, top_p, top_k, metadata, cache_control, stream,
thinking, ...) goes as it is; one that changes what the answer is (response_format, tools in OpenAI's shape)
goes too, so that Anthropic's 400 says it is not understood, rather than a different answer coming back."""

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
STATUS_OF_ERROR = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "billing_error": 402,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBackend(HttpBackend):
    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        max_connections: int = 100,
    ) -> None:
        # The host root, as Anthropic's SDK takes it; ".../v1" is what OpenAI users write, so it is accepted too.
        endpoint = (api_base or ANTHROPIC_API_BASE).rstrip("/").removesuffix("/v1")
        headers = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": api_key} if api_key else {})}
        url = endpoint + "/v1/messages"
        super().__init__(provider_model_name(model), endpoint, url, headers, api_key, max_connections)

    def _body(self, request: Request) -> dict[str, Any]:
        return messages_body(self.model, request)

    def _parse(self, raw: bytes, headers: Mapping[str, str]) -> Response:
        return parse_message(raw, headers, self._api_key)

    async def _read_stream(self, resp: aiohttp.ClientResponse, sent_at: float) -> Response:
        return await _Stream(resp, sent_at, self._api_key).read()

    def _error_details(self, raw: bytes) -> tuple[str, str | None, float | None]:
        return (*error_details(raw), None)


# -- the request -------------------------------------------------------------------------------------


def messages_body(model: str, request: Request) -> dict[str, Any]:
    """The Messages API body for one of our requests (OpenAI-style messages and parameters). What has no
    faithful translation is refused for that request (PermanentError), never dropped in silence."""
    params = request.params
    if isinstance(params.get("n"), int) and params["n"] > 1:
        raise PermanentError(f"Anthropic answers once a request: n={params['n']} has no translation")
    given = params.get("system")
    system, messages = _translate(
        [{"role": "system", "content": given}, *request.messages] if given else request.messages
    )
    body: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(params), "messages": messages}
    if system is not None:
        body["system"] = system
    for key, value in params.items():
        name = _PARAMS.get(key, key)
        if name == "stop_sequences" and isinstance(value, str):
            value = [value]
        if name is not None and value is not None:
            body[name] = value
    user = params.get("user")
    if user is not None:
        metadata = body.get("metadata")
        body["metadata"] = {"user_id": user, **(metadata if isinstance(metadata, dict) else {})}
    return body


def _max_tokens(params: Mapping[str, Any]) -> Any:
    # As Request.completion_budget reads them, so the limiter reserves what is sent.
    value = params.get("max_completion_tokens", params.get("max_tokens"))
    return DEFAULT_MAX_TOKENS if value is None else value


def _translate(messages: list[Message]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """System messages lifted to the top-level `system` (several are joined), the turns in Anthropic's shape."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("tool", "function") or message.get("tool_calls") or message.get("function_call"):
            raise PermanentError(
                "OpenAI-style tool calls and tool results are not translated for Anthropic:"
                " give them as Anthropic's tool_use and tool_result content blocks"
            )
        if role in ("system", "developer"):
            system.extend(_blocks(content, message.get("cache_control")))
        elif isinstance(content, str) and "cache_control" not in message:
            turns.append({"role": role, "content": content})
        else:
            turns.append({"role": role, "content": _blocks(content, message.get("cache_control"))})
    if not system:
        return None, turns
    if all(isinstance(block, dict) and block.keys() == {"type", "text"} for block in system):
        return "\n".join(block["text"] for block in system), turns  # plain text: one string, as most send it
    return system, turns


def _blocks(content: Any, cache_control: Any = None) -> list[dict[str, Any]]:
    """Content as Anthropic's blocks; a message's own `cache_control` marks its last block."""
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        blocks = [_block(part) for part in content]
    else:
        blocks = [{"type": "text", "text": "" if content is None else str(content)}]
    if cache_control is not None and blocks:
        blocks[-1] = {**blocks[-1], "cache_control": cache_control}
    return blocks


def _block(part: Any) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return part  # type: ignore[no-any-return]  # a text block, or one already in Anthropic's shape
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    block: dict[str, Any] = {"type": "image", "source": _image_source(url)}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _image_source(url: Any) -> dict[str, Any]:
    if not isinstance(url, str):
        raise PermanentError(f"an image_url part without a url: {redact(repr(url))}")
    if not url.startswith("data:"):
        return {"type": "url", "url": url}
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if encoding != "base64" or not data:
        raise PermanentError(f"an image data URL must be base64 (data:image/png;base64,...): {redact(url[:40])}")
    return {"type": "base64", "media_type": media_type, "data": data}


# -- the answer --------------------------------------------------------------------------------------


MALFORMED = (ValueError, KeyError, TypeError, AttributeError)
"""What reading a malformed message raises."""


def parse_message(raw: bytes, headers: Mapping[str, str], secret: str | None) -> Response:
    try:
        return message_of(json.loads(raw), headers)
    except MALFORMED as exc:
        raise ServerError(f"malformed message: {redact(quote(raw), secret)!r}") from exc


def message_of(data: Any, headers: Mapping[str, str]) -> Response:
    """A decoded message as our answer; one of `MALFORMED` if it is not one."""
    text = "".join(block["text"] for block in data["content"] if block.get("type") == "text")
    return Response(
        content=text,
        usage=_usage(data.get("usage"), None),
        finish_reason=_finish_reason(data.get("stop_reason")),
        headers=headers,
    )


def _finish_reason(stop_reason: Any) -> str | None:
    return None if stop_reason is None else _FINISH_REASONS.get(stop_reason, str(stop_reason))


def _usage(raw: Any, before: Usage | None) -> Usage | None:
    """Anthropic's usage as ours: input, cache writes and cache reads are reported apart, and all are
    input. A stream's later counts are cumulative and may leave out what they do not update (`before`)."""
    if not isinstance(raw, dict):
        return before
    old = before or Usage()
    read = count(raw["cache_read_input_tokens"]) if raw.get("cache_read_input_tokens") is not None else None
    write = count(raw["cache_creation_input_tokens"]) if raw.get("cache_creation_input_tokens") is not None else None
    uncached = count(raw["input_tokens"]) if raw.get("input_tokens") is not None else None
    read = old.cache_read_tokens if read is None else read
    write = old.cache_write_tokens if write is None else write
    prompt = old.prompt_tokens if uncached is None else uncached + read + write
    output = old.completion_tokens if raw.get("output_tokens") is None else count(raw["output_tokens"])
    return Usage(prompt, output, prompt + output, cache_read_tokens=read, cache_write_tokens=write)


def error_details(raw: bytes) -> tuple[str, str | None]:
    """Message and type of `{"type": "error", "error": {"type": ..., "message": ...}}`."""
    try:
        error = json.loads(raw)["error"]
        kind = error.get("type")
        return str(error.get("message") or kind or "error"), (str(kind) if kind else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return quote(raw) or "empty answer", None


class _Stream:
    """One streamed answer: message_start (input usage), content_block_delta per piece of text,
    message_delta (stop reason, output usage), message_stop; an `error` event may come at any point."""

    __slots__ = ("_parts", "_resp", "_secret", "_sent_at", "finish_reason", "ttft_s", "usage")

    def __init__(self, resp: aiohttp.ClientResponse, sent_at: float, secret: str | None) -> None:
        self._resp, self._sent_at, self._secret = resp, sent_at, secret
        self._parts: list[str] = []
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.ttft_s: float | None = None

    async def read(self) -> Response:
        async for line in self._resp.content:
            if not line.startswith(b"data:"):
                continue  # `event:` repeats the data's own type; blank lines and comments say nothing
            data = line[5:].strip()
            try:
                event = json.loads(data)
                done = self._take(event)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ServerError(f"malformed stream event: {redact(quote(data), self._secret)!r}") from exc
            if done:
                return Response(
                    "".join(self._parts),
                    usage=self.usage,
                    finish_reason=self.finish_reason,
                    headers=self._resp.headers,
                    ttft_s=self.ttft_s,
                )
        raise ConnectError("stream ended before message_stop")

    def _take(self, event: dict[str, Any]) -> bool:
        """Take one event in; True at the end of the message."""
        kind = event["type"]
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "text_delta":
                if self.ttft_s is None:
                    self.ttft_s = time.perf_counter() - self._sent_at
                self._parts.append(delta["text"])
        elif kind == "message_start":
            self.usage = _usage(event["message"].get("usage"), self.usage)
        elif kind == "message_delta":
            self.usage = _usage(event.get("usage"), self.usage)
            self.finish_reason = _finish_reason(event["delta"].get("stop_reason")) or self.finish_reason
        elif kind == "message_stop":
            return True
        elif kind == "error":
            raise self._error(event.get("error") or {})
        return False

    def _error(self, error: dict[str, Any]) -> RequestError:
        """An error after the 200 began: classified by its type as it would be before a 200 (overloaded_error is
        transient, so the attempt is retried; a billing error stops the run; invalid_request_error fails the
        request)."""
        kind = str(error.get("type") or "error")
        message = redact(f"{kind} mid-stream: {error.get('message') or 'no message'}", self._secret)
        code = redact(kind, self._secret, limit=CODE_CHARS)
        status = STATUS_OF_ERROR.get(kind, 500)
        found = error_for_status(status, message, code=code, headers=self._resp.headers)
        found.counted = True
        return found
