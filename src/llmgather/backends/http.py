"""What the native HTTP backends share: one session, one POST per attempt, and every failure classified.

A subclass says only what differs between wires: the body it sends, how it reads an answer, a stream and an
error body. The transport's own failures, the provider's refusals and the redaction of the key are here, once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from llmgather.backends.base import json_body, open_session
from llmgather.backends.redact import redact
from llmgather.errors import ConnectError, RequestError, error_for_status
from llmgather.retry import parse_retry_after
from llmgather.types import Request, Response

CODE_CHARS = 80
"""Of a provider's error code, at most this much is quoted."""


class HttpBackend:
    def __init__(
        self, model: str, endpoint: str, url: str, headers: dict[str, str], api_key: str | None, max_connections: int
    ) -> None:
        self.model = model
        self.endpoint = endpoint
        self._url = url
        self._headers = {"Content-Type": "application/json", "User-Agent": "llmgather", **headers}
        self._api_key = api_key
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def send(self, request: Request) -> Response:
        if self._session is None:
            self._session = open_session(self._max_connections)
        body = self._body(request)
        try:
            sent_at = time.perf_counter()
            async with self._session.post(self._url, data=json_body(body), headers=self._headers) as resp:
                if resp.status != 200:
                    raise self._error(resp.status, await resp.read(), resp.headers)
                if body.get("stream"):
                    return await self._read_stream(resp, sent_at)
                return self._parse(await resp.read(), resp.headers)
        except aiohttp.ClientResponseError as exc:
            raise error_for_status(exc.status, self._redact(exc.message)) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectError(f"{type(exc).__name__}: {self._redact(str(exc))}") from exc

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> RequestError:
        message, code, delay = self._error_details(raw)
        message = " ".join(message.split())  # one line, as every error llmgather prints (Google's run to several)
        message, code = self._redact(message), (redact(code, self._api_key, limit=CODE_CHARS) if code else None)
        retry_after = parse_retry_after(headers)
        if retry_after is None:
            retry_after = delay  # a wait the body gave (Google's RetryInfo), when no header did
        return error_for_status(status, message, code=code, retry_after=retry_after, headers=headers)

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- what each wire says its own way ---------------------------------------------------------------

    def _body(self, request: Request) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, raw: bytes, headers: Mapping[str, str]) -> Response:
        raise NotImplementedError

    async def _read_stream(self, resp: aiohttp.ClientResponse, sent_at: float) -> Response:
        raise NotImplementedError

    def _error_details(self, raw: bytes) -> tuple[str, str | None, float | None]:
        """The message, the provider's code for the error, and a retry delay the body gives, if any."""
        raise NotImplementedError
