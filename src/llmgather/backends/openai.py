"""Native OpenAI-compatible chat completions over aiohttp: OpenAI, vLLM, Ollama, llama.cpp, and the rest."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from llmgather.backends.redact import redact
from llmgather.config import OPENAI_API_BASE, provider_model_name
from llmgather.errors import ConnectError, RequestError, ServerError, error_for_status
from llmgather.retry import parse_retry_after
from llmgather.types import Request, Response, Usage

_QUOTE_BYTES = 4096
_CODE_CHARS = 80


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        max_connections: int = 100,
    ) -> None:
        self.model = provider_model_name(model)
        self.endpoint = (api_base or OPENAI_API_BASE).rstrip("/")
        self._url = self.endpoint + "/chat/completions"
        self._api_key = api_key
        self._headers = {"Content-Type": "application/json", "User-Agent": "llmgather"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Sized to the run's concurrency: aiohttp's default pool silently caps a run at 100 connections.
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, ttl_dns_cache=300)
        # The engine times each attempt itself; here only "no timeout", so aiohttp's 300 s default
        # (rounded up to whole seconds) never cuts in first.
        timeout = aiohttp.ClientTimeout(total=None, ceil_threshold=3600)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def send(self, request: Request) -> Response:
        session = self._session or self._open()
        body = {"model": self.model, "messages": request.messages, **request.params}
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            async with session.post(self._url, data=payload, headers=self._headers) as resp:
                if resp.status != 200:
                    raise self._error(resp.status, await resp.read(), resp.headers)
                if body.get("stream"):
                    return await _read_stream(resp, self._api_key)
                return _parse_completion(await resp.read(), resp.headers, self._api_key)
        except aiohttp.ClientResponseError as exc:
            raise error_for_status(exc.status, self._redact(exc.message)) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectError(f"{type(exc).__name__}: {self._redact(str(exc))}") from exc

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> RequestError:
        message, code = _error_details(raw)
        message, code = self._redact(message), (redact(code, self._api_key, limit=_CODE_CHARS) if code else None)
        retry_after = parse_retry_after(headers)
        return error_for_status(status, message, code=code, retry_after=retry_after, headers=headers)

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error_details(raw: bytes) -> tuple[str, str | None]:
    try:
        error = json.loads(raw)["error"]
        if isinstance(error, str):
            return error, None
        code = error.get("code") or error.get("type")
        return str(error.get("message") or code or "error"), (str(code) if code else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return _quote(raw) or "empty answer", None


def _quote(raw: bytes) -> str:
    # Only the head is read: redaction bounds the quote again, after it has looked at every word.
    return raw[:_QUOTE_BYTES].decode("utf-8", "replace")


def _parse_completion(raw: bytes, headers: Mapping[str, str], secret: str | None) -> Response:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        return Response(
            content=message.get("content"),
            usage=_usage(data.get("usage")),
            finish_reason=choice.get("finish_reason"),
            headers=headers,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ServerError(f"malformed completion: {redact(_quote(raw), secret)!r}") from exc


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    total = raw.get("total_tokens")
    return Usage(prompt, completion, prompt + completion if total is None else _count(total))


def _count(raw: Any) -> int:
    """A token count as the provider gave it; ValueError (a malformed answer) unless a whole number >= 0.
    A negative count would be a negative cost, and a spend below zero defeats `--max-cost`."""
    if raw is None:
        return 0
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise ValueError(f"token count {raw!r} is not a whole number >= 0")
    return raw


async def _read_stream(resp: aiohttp.ClientResponse, secret: str | None) -> Response:
    """Assemble a server-sent-event stream of chunks into one answer."""
    parts: list[str] = []
    usage: Usage | None = None
    finish_reason: str | None = None
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
                    parts.append(delta["content"])
                finish_reason = choice.get("finish_reason") or finish_reason
        except (ValueError, TypeError, AttributeError) as exc:
            raise ServerError(f"malformed stream chunk: {redact(_quote(data), secret)!r}") from exc
    else:
        raise ConnectError("stream ended before [DONE]")
    return Response(content="".join(parts), usage=usage, finish_reason=finish_reason, headers=resp.headers)
