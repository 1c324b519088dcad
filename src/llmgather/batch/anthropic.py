"""Anthropic's Message Batches: `POST /v1/messages/batches` with every request's `params` exactly as the online
backend's Messages body, its results read back line by line by the online backend's own parser, and its
errors classified by their type as the online backend classifies an error event mid-stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote as quote_path

from llmgather.backends.anthropic import (
    ANTHROPIC_VERSION,
    MALFORMED,
    STATUS_OF_ERROR,
    error_details,
    message_of,
    messages_body,
)
from llmgather.backends.base import count, json_body
from llmgather.batch.api import BatchItem, BatchState, BatchStatus, EndedAs
from llmgather.batch.http import BatchHttp
from llmgather.config import ANTHROPIC_API_BASE, provider_model_name
from llmgather.errors import RequestError
from llmgather.types import Request

BATCHES = "/v1/messages/batches"
PAGE = 100
MAX_PAGES = 1000
UNANSWERED = frozenset({"canceled", "expired"})
"""Result types of a request that was never run: it goes again."""
_STATES = {"in_progress": BatchState.IN_PROGRESS, "canceling": BatchState.FINALIZING, "ended": BatchState.ENDED}
_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


class AnthropicBatches:
    max_requests = 100_000
    max_bytes = 256_000_000
    keeps_tags = False

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None) -> None:
        self.model = provider_model_name(model)
        # The host root, as the online backend takes it (".../v1" accepted too).
        self.endpoint = (api_base or ANTHROPIC_API_BASE).rstrip("/").removesuffix("/v1")
        headers = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": api_key} if api_key else {})}
        self._http = BatchHttp(self.model, self.endpoint, headers, api_key, lambda raw: (*error_details(raw), None))

    def encode(self, custom_id: str, request: Request) -> bytes:
        """Raises PermanentError for a request with no faithful translation, as the online backend does."""
        params = messages_body(self.model, request)
        params.pop("stream", None)  # a batch answers whole
        params.pop("stream_options", None)
        return json_body({"custom_id": custom_id, "params": params})

    async def submit(self, lines: Sequence[bytes], tags: Mapping[str, str]) -> str:
        # Each line is already one request's JSON object: joined, not decoded again. Anthropic keeps no tags.
        body = b"".join((b'{"requests":[', b",".join(lines), b"]}"))
        return self._id(await self._http.call("POST", BATCHES, body=body))

    async def status(self, batch_id: str) -> BatchStatus:
        return self._status(await self._http.call("GET", _path(batch_id)))

    async def results(self, batch_id: str) -> AsyncIterator[BatchItem]:
        # The path under our own endpoint, not the batch's `results_url`: an answer naming another host would
        # have the key sent there.
        async for line in self._http.lines(_path(batch_id) + "/results"):
            yield self._item(line)

    async def cancel(self, batch_id: str) -> None:
        await self._http.call("POST", _path(batch_id) + "/cancel")

    async def find(self, tags: Mapping[str, str], since: float) -> list[BatchStatus]:
        """Every batch created since `since`: Anthropic keeps no tags to match."""
        found: list[BatchStatus] = []
        params = {"limit": str(PAGE)}
        for _ in range(MAX_PAGES):
            page = await self._http.call("GET", BATCHES, params=params)
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise self._http.malformed("list of batches", page)
            batches = [self._status(b) for b in data]
            found += [b for b in batches if not _before(b, since)]
            # Newest first: once one is older than `since`, so is the rest.
            if not batches or any(_before(b, since) for b in batches) or not page.get("has_more"):
                break
            params = {"limit": str(PAGE), "after_id": batches[-1].id}
        return found

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- reading what Anthropic says -------------------------------------------------------------------

    def _id(self, data: Any) -> str:
        found = data.get("id") if isinstance(data, dict) else None
        if not isinstance(found, str) or not found:
            raise self._http.malformed("message batch", data)
        return found

    def _status(self, data: Any) -> BatchStatus:
        try:
            state = _STATES[data["processing_status"]]
            counts = {name: count((data.get("request_counts") or {}).get(name)) for name in _COUNTS}
            total = sum(counts.values())
            ended_as = None
            if state is BatchState.ENDED:
                if data.get("cancel_initiated_at"):
                    ended_as = EndedAs.CANCELLED
                elif total and counts["expired"] == total:
                    ended_as = EndedAs.EXPIRED
                else:
                    ended_as = EndedAs.COMPLETED
            created = data.get("created_at")
            return BatchStatus(
                id=self._id(data),
                state=state,
                ended_as=ended_as,
                total=total,
                succeeded=counts["succeeded"],
                failed=counts["errored"],
                created_at=None if created is None else _unix(created),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._http.malformed("message batch", data) from exc

    def _item(self, line: bytes) -> BatchItem:
        """`{"custom_id", "result": {"type": "succeeded", "message"} | {"type": "errored", "error"} |
        {"type": "canceled"} | {"type": "expired"}}`."""
        try:
            data = json.loads(line)
            custom_id, result = data["custom_id"], data["result"]
            kind = result["type"]
            if not isinstance(custom_id, str):
                raise TypeError("custom_id is not a string")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._http.malformed("batch result line", line) from exc
        if kind == "succeeded":
            try:
                return BatchItem(custom_id, response=message_of(result["message"], {}))
            except MALFORMED:
                return BatchItem(custom_id, error=self._http.malformed("message", result.get("message")))
        if kind in UNANSWERED:
            return BatchItem(custom_id)
        if kind != "errored":
            return BatchItem(custom_id, error=self._http.malformed("batch result", result))
        return BatchItem(custom_id, error=self._error(result.get("error")))

    def _error(self, error: Any) -> RequestError:
        """An errored request's error, classified by its type's status as the online backend does; the
        documented shape is the error response (`{"type": "error", "error": {...}}`), the bare error taken too."""
        inner = error.get("error") if isinstance(error, dict) and isinstance(error.get("error"), dict) else error
        kind = inner.get("type") if isinstance(inner, dict) else None
        raw = json.dumps({"error": inner if isinstance(inner, dict) else {}}).encode()
        return self._http.classify(STATUS_OF_ERROR.get(str(kind), 500), raw)


def _path(batch_id: str) -> str:
    return f"{BATCHES}/{quote_path(batch_id, safe='')}"


def _before(batch: BatchStatus, since: float) -> bool:
    return batch.created_at is not None and batch.created_at < since


def _unix(rfc3339: str) -> float:
    moment = datetime.fromisoformat(rfc3339)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
