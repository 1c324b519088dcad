"""Native OpenAI-compatible chat completions over aiohttp: OpenAI, Gemini's compatible endpoint, vLLM, Ollama,
llama.cpp, and the rest."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from llmgather.backends.base import count, quote
from llmgather.backends.http import HttpBackend
from llmgather.backends.redact import redact
from llmgather.config import OPENAI_API_BASE, provider_model_name
from llmgather.errors import ConnectError, ServerError
from llmgather.retry import parse_duration
from llmgather.types import Request, Response, Usage

_GOOGLE_RPC = "type.googleapis.com/google.rpc."


class OpenAIBackend(HttpBackend):
    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        max_connections: int = 100,
    ) -> None:
        endpoint = (api_base or OPENAI_API_BASE).rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = endpoint + "/chat/completions"
        super().__init__(provider_model_name(model), endpoint, url, headers, api_key, max_connections)

    def _body(self, request: Request) -> dict[str, Any]:
        return chat_body(self.model, request)

    def _parse(self, raw: bytes, headers: Mapping[str, str]) -> Response:
        return parse_completion(raw, headers, self._api_key)

    async def _read_stream(self, resp: aiohttp.ClientResponse, sent_at: float) -> Response:
        return await _read_stream(resp, sent_at, self._api_key)

    def _error_details(self, raw: bytes) -> tuple[str, str | None, float | None]:
        return error_details(raw)


def chat_body(model: str, request: Request) -> dict[str, Any]:
    """The chat completions body for one request (the batch lane sends the same in its lines)."""
    return {"model": model, "messages": request.messages, **request.params}


def error_details(raw: bytes) -> tuple[str, str | None, float | None]:
    """The message, the provider's code and a retry delay from an error body: OpenAI's `{"error": {...}}`,
    or Google's, which comes as a JSON array of one such object and says more in its `details`."""
    try:
        data = json.loads(raw)
        if isinstance(data, list) and data:
            data = data[0]
        error = data["error"]
        if isinstance(error, str):
            return error, None, None
        code = error.get("code") or error.get("type")
        if isinstance(code, int):  # Google's `code` is the HTTP status again; its name for the error is `status`
            code = error.get("status") or code
        quota_id, delay = _google_details(error.get("details"))
        code = quota_id or code
        return str(error.get("message") or code or "error"), (str(code) if code else None), delay
    except (ValueError, KeyError, TypeError, AttributeError):
        return quote(raw) or "empty answer", None, None


def _google_details(details: Any) -> tuple[str | None, float | None]:
    """From Google's error details: what was hit, as a code (the quota's id, a per-day one first as it is the
    one that matters; else the ErrorInfo's reason, such as API_KEY_INVALID), and `RetryInfo.retryDelay`."""
    quota_id: str | None = None
    reason: str | None = None
    delay: float | None = None
    for detail in details if isinstance(details, list) else ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", "")).removeprefix(_GOOGLE_RPC)
        if kind == "RetryInfo":
            delay = parse_duration(detail.get("retryDelay"))
        elif kind == "ErrorInfo" and isinstance(detail.get("reason"), str):
            reason = detail["reason"]
        elif kind == "QuotaFailure":
            for violation in detail.get("violations") or ():
                found = violation.get("quotaId") if isinstance(violation, dict) else None
                if isinstance(found, str) and (quota_id is None or "PerDay" in found):
                    quota_id = found
    return quota_id or reason, delay


MALFORMED = (ValueError, KeyError, IndexError, TypeError, AttributeError)
"""What reading a malformed completion raises."""


def parse_completion(raw: bytes, headers: Mapping[str, str], secret: str | None) -> Response:
    try:
        return completion_of(json.loads(raw), headers)
    except MALFORMED as exc:
        raise ServerError(f"malformed completion: {redact(quote(raw), secret)!r}") from exc


def completion_of(data: Any, headers: Mapping[str, str]) -> Response:
    """A decoded chat completion as our answer; one of `MALFORMED` if it is not one."""
    choice = data["choices"][0]
    message = choice.get("message") or {}
    return Response(
        content=message.get("content"),
        usage=_usage(data.get("usage")),
        finish_reason=choice.get("finish_reason"),
        headers=headers,
    )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = count(raw.get("prompt_tokens"))
    completion = count(raw.get("completion_tokens"))
    total = raw.get("total_tokens")
    details = raw.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(prompt, completion, prompt + completion if total is None else count(total), cache_read_tokens=cached)


async def _read_stream(resp: aiohttp.ClientResponse, sent_at: float, secret: str | None) -> Response:
    """Assemble a server-sent-event stream of chunks into one answer, timing its first token."""
    parts: list[str] = []
    usage: Usage | None = None
    finish_reason: str | None = None
    ttft_s: float | None = None
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        try:
            chunk = json.loads(data)
            usage = _usage(chunk.get("usage")) or usage
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    if ttft_s is None:
                        ttft_s = time.perf_counter() - sent_at
                    parts.append(delta["content"])
                finish_reason = choice.get("finish_reason") or finish_reason
        except (ValueError, TypeError, AttributeError) as exc:
            raise ServerError(f"malformed stream chunk: {redact(quote(data), secret)!r}") from exc
    else:
        raise ConnectError("stream ended before [DONE]")
    return Response("".join(parts), usage=usage, finish_reason=finish_reason, headers=resp.headers, ttft_s=ttft_s)
