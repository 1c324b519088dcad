"""OpenAI's Batch API (also Gemini's and other OpenAI-compatible endpoints with `/v1/batches`): the lines
uploaded as a file (`POST /files`, purpose `batch`), a batch made of it (`POST /batches`), and its output and
error files read back line by line. Each line's body is exactly what the online backend sends, and each
answer is read by the online backend's own parser, so usage and finish reasons are the same either way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote as quote_path

import aiohttp

from llmgather.backends.base import count, json_body
from llmgather.backends.openai import MALFORMED, chat_body, completion_of, error_details
from llmgather.batch.api import BatchItem, BatchProblem, BatchState, BatchStatus, EndedAs
from llmgather.batch.http import BatchHttp
from llmgather.config import OPENAI_API_BASE, provider_model_name
from llmgather.errors import RequestTimeout, error_for_status
from llmgather.types import Request

CHAT_URL = "/v1/chat/completions"
"""The `url` of every line and the batch's `endpoint`, whatever the api base (Gemini's too)."""
PAGE = 100
"""Batches asked for per page of a listing (OpenAI's most)."""
MAX_PAGES = 1000
UNANSWERED = frozenset({"batch_expired", "batch_cancelled"})
"""The error codes of a request that was never run: its batch expired or was cancelled first."""

_STATES: dict[str, tuple[BatchState, EndedAs | None]] = {
    "validating": (BatchState.VALIDATING, None),
    "in_progress": (BatchState.IN_PROGRESS, None),
    "finalizing": (BatchState.FINALIZING, None),
    "cancelling": (BatchState.FINALIZING, None),
    "completed": (BatchState.ENDED, EndedAs.COMPLETED),
    "failed": (BatchState.ENDED, EndedAs.FAILED),
    "expired": (BatchState.ENDED, EndedAs.EXPIRED),
    "cancelled": (BatchState.ENDED, EndedAs.CANCELLED),
}


class OpenAIBatches:
    max_requests = 50_000
    max_bytes = 200_000_000
    keeps_tags = True

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None) -> None:
        self.model = provider_model_name(model)
        self.endpoint = (api_base or OPENAI_API_BASE).rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = BatchHttp(self.model, self.endpoint, headers, api_key, error_details)

    def encode(self, custom_id: str, request: Request) -> bytes:
        body = chat_body(self.model, request)
        body.pop("stream", None)  # a batch answers whole
        body.pop("stream_options", None)
        return json_body({"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": body})

    async def submit(self, lines: Sequence[bytes], tags: Mapping[str, str]) -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        data = b"".join(line + b"\n" for line in lines)
        form.add_field("file", data, filename="llmgather-batch.jsonl", content_type="application/jsonl")
        uploaded = await self._http.call("POST", "/files", form=form)
        del data, form
        create = {"input_file_id": self._id(uploaded, "file"), "endpoint": CHAT_URL, "completion_window": "24h"}
        batch = await self._http.call("POST", "/batches", body=json_body({**create, "metadata": dict(tags)}))
        return self._id(batch, "batch")

    async def status(self, batch_id: str) -> BatchStatus:
        return self._status(await self._http.call("GET", f"/batches/{quote_path(batch_id, safe='')}"))

    async def results(self, batch_id: str) -> AsyncIterator[BatchItem]:
        batch = await self._http.call("GET", f"/batches/{quote_path(batch_id, safe='')}")
        if not isinstance(batch, dict):
            raise self._http.malformed("batch", batch)
        for key in ("output_file_id", "error_file_id"):  # answers first, then the requests that failed
            file_id = batch.get(key)
            if isinstance(file_id, str) and file_id:
                async for line in self._http.lines(f"/files/{quote_path(file_id, safe='')}/content"):
                    yield self._item(line)

    async def cancel(self, batch_id: str) -> None:
        await self._http.call("POST", f"/batches/{quote_path(batch_id, safe='')}/cancel")

    async def find(self, tags: Mapping[str, str], since: float) -> list[BatchStatus]:
        found: list[BatchStatus] = []
        params = {"limit": str(PAGE)}
        for _ in range(MAX_PAGES):
            page = await self._http.call("GET", "/batches", params=params)
            batches = [self._status(b) for b in self._listed(page)]
            found += [b for b in batches if _carries(b.tags, tags) and not _before(b, since)]
            # Newest first: once one is older than `since`, so is the rest.
            if not batches or any(_before(b, since) for b in batches) or not page.get("has_more"):
                break
            params = {"limit": str(PAGE), "after": batches[-1].id}
        return found

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- reading what OpenAI says ----------------------------------------------------------------------

    def _id(self, data: Any, what: str) -> str:
        found = data.get("id") if isinstance(data, dict) else None
        if not isinstance(found, str) or not found:
            raise self._http.malformed(what, data)
        return found

    def _listed(self, page: Any) -> list[Any]:
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise self._http.malformed("list of batches", page)
        return data

    def _status(self, data: Any) -> BatchStatus:
        try:
            state, ended_as = _STATES[data["status"]]
            counts = data.get("request_counts") or {}
            errors = (data.get("errors") or {}).get("data") or ()
            created = data.get("created_at")
            return BatchStatus(
                id=self._id(data, "batch"),
                state=state,
                ended_as=ended_as,
                total=count(counts.get("total")),
                succeeded=count(counts.get("completed")),
                failed=count(counts.get("failed")),
                problems=tuple(self._problem(e) for e in errors),
                tags={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
                created_at=None if created is None else float(created),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._http.malformed("batch", data) from exc

    def _problem(self, error: Mapping[str, Any]) -> BatchProblem:
        line = error.get("line")
        return BatchProblem(
            code=self._http.redact(str(error.get("code") or "error")),
            message=self._http.redact(" ".join(str(error.get("message") or "").split())),
            line=line if isinstance(line, int) and not isinstance(line, bool) else None,
        )

    def _item(self, line: bytes) -> BatchItem:
        """One line of the output or error file: `{"custom_id", "response": {"status_code", "body"}, "error"}`."""
        try:
            data = json.loads(line)
            custom_id = data["custom_id"]
            response = data.get("response")
            if not isinstance(custom_id, str):
                raise TypeError("custom_id is not a string")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._http.malformed("batch result line", line) from exc
        if not isinstance(response, dict):
            return self._not_run(custom_id, data.get("error"))
        status, body = response.get("status_code"), response.get("body")
        if status == 200:
            try:
                return BatchItem(custom_id, response=completion_of(body, {}))
            except MALFORMED:
                return BatchItem(custom_id, error=self._http.malformed("completion", body))
        if not isinstance(status, int) or isinstance(status, bool):
            return BatchItem(custom_id, error=self._http.malformed("batch result", data))
        raw = b"" if body is None else json.dumps(body).encode()
        return BatchItem(custom_id, error=self._http.classify(status, raw))

    def _not_run(self, custom_id: str, error: Any) -> BatchItem:
        """A line without a response: its request was never run (expired or cancelled with its batch: it goes
        again), or failed without an HTTP answer (a timeout, or else a server error: both retried)."""
        error = error if isinstance(error, dict) else {}
        code = error.get("code")
        if code in UNANSWERED:
            return BatchItem(custom_id)
        message = self._http.redact(" ".join(str(error.get("message") or "no response, no error").split()))
        if code == "request_timeout":  # the model's call timed out, as an online attempt may
            return BatchItem(custom_id, error=RequestTimeout(message, code=code))
        code = self._http.redact(str(code)) if code else None
        return BatchItem(custom_id, error=error_for_status(500, message, code=code))


def _carries(have: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(have.get(k) == v for k, v in want.items())


def _before(batch: BatchStatus, since: float) -> bool:
    return batch.created_at is not None and batch.created_at < since
