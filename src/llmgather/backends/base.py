"""The backend contract: send one request, return the answer or raise a classified error.

A backend knows nothing of limits or retries: it reports what the provider said (headers, usage)
and the engine decides what to do about it. The HTTP backends share how they open their session.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import aiohttp

from llmgather.types import Request, Response


class Backend(Protocol):
    model: str
    """The model as the provider names it."""
    endpoint: str
    """Where requests go, for messages and for keying limits; never holds a secret."""

    async def send(self, request: Request) -> Response:
        """One attempt. Raises an `llmgather.errors.RequestError` subclass on failure."""
        ...

    async def aclose(self) -> None: ...


def open_session(max_connections: int) -> aiohttp.ClientSession:
    """One session for a backend's life, its pool sized to the run's concurrency: aiohttp's default pool
    silently caps a run at 100 connections."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, ttl_dns_cache=300)
    # The engine times each attempt itself; here only "no timeout", so aiohttp's 300 s default
    # (rounded up to whole seconds) never cuts in first.
    timeout = aiohttp.ClientTimeout(total=None, ceil_threshold=3600)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def json_body(body: dict[str, Any]) -> bytes:
    """A request body as compact UTF-8 JSON."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


QUOTE_BYTES = 4096
"""Of a body quoted in an error, only the head is read: redaction bounds the quote again."""


def quote(raw: bytes) -> str:
    return raw[:QUOTE_BYTES].decode("utf-8", "replace")


def count(raw: Any) -> int:
    """A token count as the provider gave it; ValueError (a malformed answer) unless a whole number >= 0.
    A negative count would be a negative cost, and a spend below zero defeats `--max-cost`."""
    if raw is None:
        return 0
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise ValueError(f"token count {raw!r} is not a whole number >= 0")
    return raw
