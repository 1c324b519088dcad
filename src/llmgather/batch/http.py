"""What the batch API clients share: JSON calls, an upload, and a file read line by line as it arrives, every
failure classified and redacted exactly as the online backends do (this is an `HttpBackend` for that reason:
its session, its error classification and its redaction, with the wire's own reader of error bodies)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from llmgather.backends.base import open_session, quote
from llmgather.backends.http import HttpBackend
from llmgather.errors import ConnectError, RequestError, ServerError, error_for_status

ErrorDetails = Callable[[bytes], tuple[str, str | None, float | None]]

CONNECTIONS = 4
"""A batch client sends a few calls at a time (submit, polls), never thousands."""
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300, ceil_threshold=3600)
"""No call may hang for ever (the lane polls again), but an upload of 200 MB must not be cut by a total."""
CHUNK_BYTES = 64 * 1024


class BatchHttp(HttpBackend):
    def __init__(
        self, model: str, endpoint: str, headers: Mapping[str, str], api_key: str | None, details: ErrorDetails
    ) -> None:
        super().__init__(model, endpoint, endpoint, dict(headers), api_key, CONNECTIONS)
        self._details = details
        # An upload sets its own multipart Content-Type; JSON calls add theirs.
        self._plain = {k: v for k, v in self._headers.items() if k != "Content-Type"}

    def _error_details(self, raw: bytes) -> tuple[str, str | None, float | None]:
        return self._details(raw)

    def classify(self, status: int, raw: bytes) -> RequestError:
        """An error body answered with `status` (one request's, inside a batch), as the online backend would
        classify and redact it."""
        return self._error(status, raw, {})

    def redact(self, text: str) -> str:
        return self._redact(text)

    def malformed(self, what: str, data: Any) -> ServerError:
        shown = data if isinstance(data, bytes) else json.dumps(data, default=str).encode()
        return ServerError(f"malformed {what}: {self._redact(quote(shown))!r}")

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        form: aiohttp.FormData | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One call answered with JSON: the decoded answer."""
        headers = self._headers if body is not None else self._plain
        data = body if form is None else form
        async with self._sent(method, path, data=data, headers=headers, params=params) as resp:
            raw = await resp.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise self.malformed(f"answer to {method} {path}", raw) from exc

    async def lines(self, path: str) -> AsyncIterator[bytes]:
        """The non-blank lines of a GET's body, as they arrive: a results file is never held whole, and a line
        may be longer than aiohttp's own readline allows (a long answer)."""
        async with self._sent("GET", path, headers=self._plain) as resp:
            rest = b""
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                *whole, rest = (rest + chunk).split(b"\n")
                for line in whole:
                    if line.strip():
                        yield line
            if rest.strip():
                yield rest

    @contextlib.asynccontextmanager
    async def _sent(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        if self._session is None:
            self._session = open_session(CONNECTIONS)
        try:
            async with self._session.request(method, self._url + path, timeout=TIMEOUT, **kwargs) as resp:
                if not 200 <= resp.status < 300:
                    raise self._error(resp.status, await resp.read(), resp.headers)
                yield resp
        except aiohttp.ClientResponseError as exc:
            raise error_for_status(exc.status, self._redact(exc.message)) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            # aiohttp's timeouts are connection errors too: the call may be made again.
            raise ConnectError(f"{type(exc).__name__}: {self._redact(str(exc))}") from exc
