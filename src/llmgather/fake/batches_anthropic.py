"""Anthropic's Message Batches on the fake provider, as Anthropic documents them.

Creation checks the batch's shape at once (size, custom_ids) and refuses with a 400; each request's params
are checked as the batch runs, so an invalid one comes back `errored` with `invalid_request_error`, as the
docs say. As documented, `request_counts` keep every request in `processing` until the batch has ended.
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmgather.fake import anthropic
from llmgather.fake.batches import (
    DAY_S,
    INVALID,
    Batch,
    BatchStore,
    Item,
    View,
    outcome_at_end,
    page,
    valid_custom_id,
)
from llmgather.fake.common import Refusal, count_tokens, expected_content, prompt_digest

if TYPE_CHECKING:
    from llmgather.fake.server import FakeProvider

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


def add_routes(app: web.Application, provider: FakeProvider) -> None:
    api = _Api(provider)
    app.router.add_post("/v1/messages/batches", api.create)
    app.router.add_get("/v1/messages/batches", api.list)
    app.router.add_get("/v1/messages/batches/{id}", api.retrieve)
    app.router.add_post("/v1/messages/batches/{id}/cancel", api.cancel)
    app.router.add_get("/v1/messages/batches/{id}/results", api.results)


class _Api:
    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.store: BatchStore = provider.batches

    def _refuse(self, status: int, message: str) -> web.Response:
        return anthropic.error(self.provider, Refusal(status, message))

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """The online endpoint's checks: the key (x-api-key or bearer), and the version header."""
        key = self.provider.config.api_key
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if key and key not in (request.headers.get("x-api-key"), bearer):
            return self._refuse(401, "invalid x-api-key")
        if "anthropic-version" not in request.headers:
            return self._refuse(400, "anthropic-version: header is required")
        return None

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        raw = await request.read()
        if len(raw) > MAX_BYTES:
            return self._refuse(413, f"The batch is larger than the limit of {MAX_BYTES:,} bytes.")
        try:
            requests = json.loads(raw)["requests"]
        except (ValueError, KeyError, TypeError):
            return self._refuse(400, "requests: Field required")
        problem = _shape_problem(requests, self.provider.config.batch_max_requests or MAX_REQUESTS)
        if problem is not None:
            return self._refuse(400, problem)
        seq, batch_id = self.store.next_id("msgbatch_", 24)
        items = [self._item(seq, entry["custom_id"], entry["params"]) for entry in requests]
        batch = Batch(batch_id, "anthropic", seq, items, self.store.clock(), self.store.wall())
        self.store.add(batch, [item.digest for item in items])
        return web.json_response(self._batch_json(request, batch, self.store.view(batch)))

    def _item(self, seq: int, custom_id: str, params: Any) -> Item:
        """What a request gets; its params checked as the online endpoint checks a body."""
        config = self.provider.config
        try:
            conversation = anthropic._parse(params)
        except anthropic._Invalid as invalid:
            digest = prompt_digest(json.dumps(params, sort_keys=True))
            return Item(custom_id, digest, 0, "permanent", error=(400, "invalid_request_error", str(invalid)))
        text = conversation.text
        item = Item(custom_id, prompt_digest(text), count_tokens(text), self.store.outcome(seq, custom_id, text))
        if INVALID in text:
            item.outcome = "permanent"
        if config.models and conversation.model not in config.models:
            item.outcome, item.error = "permanent", (404, "not_found_error", f"model: {conversation.model}")
        elif item.outcome == "permanent":
            item.error = (400, "invalid_request_error", "This request is invalid.")
        elif item.outcome == "transient":
            overloaded = random.Random(f"{config.seed}:{seq}:{custom_id}:kind").random() < 0.5
            item.error = (529, "overloaded_error", "Overloaded") if overloaded else (500, "api_error", "Internal")
        elif item.outcome == "ok":
            tokens = min(conversation.max_tokens, config.completion_tokens)
            item.answer = {
                "id": f"msg_fakebatch{item.digest}{seq:04d}",
                "type": "message",
                "role": "assistant",
                "model": conversation.model,
                "content": [{"type": "text", "text": expected_content(text, tokens)}],
                "stop_reason": "max_tokens" if tokens < config.completion_tokens else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": item.tokens,
                    "output_tokens": tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            }
        return item

    def _find(self, request: web.Request) -> Batch | web.Response:
        batch = self.store.batches.get(request.match_info["id"])
        if batch is None or batch.api != "anthropic":
            return self._refuse(404, f"message_batch_id: no batch {request.match_info['id']!r}")
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        batch = self._find(request)
        if isinstance(batch, web.Response):
            return batch
        return web.json_response(self._batch_json(request, batch, self.store.view(batch)))

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        batch = self._find(request)
        if isinstance(batch, web.Response):
            return batch
        if self.store.view(batch).ended:
            return self._refuse(400, f"Batch {batch.id} has ended and cannot be canceled.")
        return web.json_response(self._batch_json(request, batch, self.store.cancel(batch)))

    async def list(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self._refuse(400, "limit: Input should be between 1 and 1000")
        mine = [batch for batch in self.store.batches.values() if batch.api == "anthropic"]
        chosen, more = page(mine, limit, request.query.get("after_id"), request.query.get("before_id"))
        data = [self._batch_json(request, batch, self.store.view(batch)) for batch in chosen]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response({"data": data, "has_more": more, "first_id": first, "last_id": last})

    async def results(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        batch = self._find(request)
        if isinstance(batch, web.Response):
            return batch
        view = self.store.view(batch)
        if not view.ended:
            return self._refuse(400, f"Batch {batch.id} has not ended: its results are not available yet.")
        lines = [_result_line(item, outcome_at_end(batch, view, i)) for i, item in enumerate(batch.items)]
        body = "".join(json.dumps(line) + "\n" for line in lines)
        return web.Response(body=body.encode(), content_type="application/binary")

    def _batch_json(self, request: web.Request, batch: Batch, view: View) -> dict[str, Any]:
        counts = dict.fromkeys(COUNTS, 0)
        if view.ended:
            for index in range(len(batch.items)):
                counts[outcome_at_end(batch, view, index)] += 1
        else:
            counts["processing"] = len(batch.items)
        ended = view.marks.get("ended")
        cancelled = view.marks.get("cancelling")
        results = f"{request.url.origin()}/v1/messages/batches/{batch.id}/results" if view.ended else None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": view.state,
            "request_counts": counts,
            "ended_at": None if ended is None else _rfc3339(batch.created_wall + ended),
            "created_at": _rfc3339(batch.created_wall),
            "expires_at": _rfc3339(batch.created_wall + DAY_S),
            "cancel_initiated_at": None if cancelled is None else _rfc3339(batch.created_wall + cancelled),
            "archived_at": None,
            "results_url": results,
        }


def _shape_problem(requests: Any, most: int) -> str | None:
    """Why a batch is refused at creation, in the API's words; None if it is not."""
    if not isinstance(requests, list) or not requests:
        return "requests: List should have at least 1 item after validation, not 0"
    if len(requests) > most:
        return f"requests: List should have at most {most} items after validation, not {len(requests)}"
    seen: set[str] = set()
    for i, entry in enumerate(requests):
        if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
            return f"requests.{i}.params: Field required"
        custom_id = entry.get("custom_id")
        if not isinstance(custom_id, str) or not valid_custom_id(custom_id):
            return f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}': custom_id must be unique in a batch."
        seen.add(custom_id)
    return None


def _result_line(item: Item, outcome: str) -> dict[str, Any]:
    result: dict[str, Any] = {"type": outcome}
    if outcome == "succeeded":
        result["message"] = item.answer
    elif outcome == "errored" and item.error is not None:
        _, kind, message = item.error
        result["error"] = {"type": "error", "error": {"type": kind, "message": message}}
    return {"custom_id": item.custom_id, "result": result}


def _rfc3339(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1_000_000):06d}Z"
