"""OpenAI's Files and Batches APIs on the fake provider, as OpenAI documents them.

A batch's input file is validated when the batch is created; a batch that breaks a rule shows `failed` with
its `errors` once its validating step is over. The output file holds the answered requests, each with the
body the online endpoint gives; the error file holds the failed ones (status 500 transient, 400 permanent),
and the requests never run, with `batch_expired` or `batch_cancelled`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmgather.fake.batches import (
    DAY_S,
    INVALID,
    Batch,
    BatchStore,
    Item,
    StoredFile,
    View,
    outcome_at_end,
    page,
)
from llmgather.fake.common import Refusal, count_tokens, expected_content, prompt_digest, prompt_text

if TYPE_CHECKING:
    from llmgather.fake.server import FakeProvider

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")
NOT_RUN = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "canceled": ("batch_cancelled", "This request could not be executed because the batch was cancelled."),
}


def add_routes(app: web.Application, provider: FakeProvider) -> None:
    api = _Api(provider)
    app.router.add_post("/v1/files", api.upload)
    app.router.add_get("/v1/files/{id}", api.file)
    app.router.add_get("/v1/files/{id}/content", api.content)
    app.router.add_delete("/v1/files/{id}", api.delete)
    app.router.add_post("/v1/batches", api.create)
    app.router.add_get("/v1/batches", api.list)
    app.router.add_get("/v1/batches/{id}", api.retrieve)
    app.router.add_post("/v1/batches/{id}/cancel", api.cancel)


class _Api:
    def __init__(self, provider: FakeProvider) -> None:
        self.provider = provider
        self.store: BatchStore = provider.batches

    def _refuse(self, status: int, message: str) -> web.Response:
        return self.provider._error(Refusal(status, message, "invalid_request_error"))

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        key = self.provider.config.api_key
        if key and request.headers.get("Authorization") != f"Bearer {key}":
            refusal = Refusal(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return self.provider._error(refusal)
        return None

    # Files.

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            return self._refuse(400, "Missing required parameter: 'file'.")
        if not isinstance(purpose, str) or purpose not in PURPOSES:
            return self._refuse(400, f"{purpose!r} is not one of {list(PURPOSES)} - 'purpose'")
        content = upload.file.read()
        return web.json_response(self._add_file(upload.filename, str(purpose), content))

    def _add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        _, file_id = self.store.next_id("file-", 22)
        stored = StoredFile(file_id, filename, purpose, content, int(self.store.wall()))
        self.store.files[file_id] = stored
        return _file_json(stored)

    def _find_file(self, request: web.Request) -> StoredFile | web.Response:
        stored = self.store.files.get(request.match_info["id"])
        if stored is None:
            return self._refuse(404, f"No such File object: {request.match_info['id']}")
        return stored

    async def file(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        found = self._find_file(request)
        return found if isinstance(found, web.Response) else web.json_response(_file_json(found))

    async def content(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        found = self._find_file(request)
        if isinstance(found, web.Response):
            return found
        return web.Response(body=found.content, content_type="application/octet-stream")

    async def delete(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        found = self._find_file(request)
        if isinstance(found, web.Response):
            return found
        del self.store.files[found.id]
        return web.json_response({"id": found.id, "object": "file", "deleted": True})

    # Batches.

    async def create(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        try:
            body = json.loads(await request.read())
            input_file_id, endpoint = body["input_file_id"], body["endpoint"]
            window, metadata = body["completion_window"], body.get("metadata")
        except (ValueError, KeyError, TypeError):
            return self._refuse(400, "Missing required parameter: 'input_file_id', 'endpoint' or 'completion_window'.")
        if endpoint != ENDPOINT:
            return self._refuse(400, f"The fake provider serves batches of {ENDPOINT} only, not {endpoint!r}.")
        if window != "24h":
            return self._refuse(400, f"Invalid value: '{window}'. Supported values are: '24h'.")
        if metadata is not None and not _valid_metadata(metadata):
            return self._refuse(400, "metadata: at most 16 pairs of strings, keys of up to 64 characters.")
        stored = self.store.files.get(input_file_id)
        if stored is None:
            return self._refuse(404, f"No such File object: {input_file_id}")
        seq, batch_id = self.store.next_id("batch_", 24)
        items, failure, model, prompts = self._read_input(seq, stored.content)
        now = self.store.clock()
        extra = {"endpoint": endpoint, "input_file_id": input_file_id, "completion_window": window, "model": model}
        batch = Batch(batch_id, "openai", seq, items, now, self.store.wall(), metadata, extra)
        batch.failure = failure or self._over_limits(batch)
        self.store.add(batch, prompts)
        return web.json_response(self._batch_json(batch, self.store.view(batch)))

    def _read_input(self, seq: int, content: bytes) -> tuple[list[Item], list[dict[str, Any]], str | None, list[str]]:
        """The items of a file, the validation errors of its lines, its model, and its prompts' digests."""
        items: list[Item] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        model: str | None = None
        prompts: list[str] = []
        for number, raw in enumerate(content.decode(errors="replace").splitlines(), 1):
            if not raw.strip():
                continue
            line, problem = _parse_line(raw, seen)
            if problem is None and model is not None and line["body"].get("model") != model:
                problem = ("mismatched_model", "All requests in a batch must use the same model.", "body.model")
            if problem is not None:
                code, message, param = problem
                errors.append({"code": code, "message": message, "param": param, "line": number})
                continue
            model = model or str(line["body"].get("model", ""))
            item = self._item(seq, line["custom_id"], line["body"])
            items.append(item)
            prompts.append(item.digest)
        return items, errors[:100], model, prompts

    def _item(self, seq: int, custom_id: str, body: dict[str, Any]) -> Item:
        config = self.provider.config
        text = prompt_text(body["messages"])
        model = str(body.get("model", ""))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = min(int(max_tokens), config.completion_tokens) if max_tokens else config.completion_tokens
        item = Item(custom_id, prompt_digest(text), count_tokens(text), self.store.outcome(seq, custom_id, text))
        if config.models and model not in config.models:
            item.outcome = "permanent"
            item.error = (404, "invalid_request_error", f"The model `{model}` does not exist.")
        elif item.outcome == "permanent":
            item.error = (400, "invalid_request_error", "The request is invalid: [[batch_permanent]].")
        elif item.outcome == "transient":
            item.error = (500, "server_error", "The server had an error while processing your request.")
        elif item.outcome == "ok":
            completion_id = f"chatcmpl-{item.digest}-b{seq}"
            item.answer = _completion(completion_id, int(self.store.wall()), model, text, item.tokens, completion)
        return item

    def _over_limits(self, batch: Batch) -> list[dict[str, Any]] | None:
        """The size limit, then the enqueued-token limit of the batch's model, as validation finds them."""
        config = self.provider.config
        most = config.batch_max_requests or MAX_REQUESTS
        if len(batch.items) > most:
            message = f"The batch has {len(batch.items)} requests, more than the limit of {most}."
            return [{"code": "batch_too_large", "message": message, "param": None, "line": None}]
        if config.batch_enqueued_tokens is None:
            return None
        model = batch.extra["model"]
        enqueued = sum(
            sum(item.tokens for item in other.items)
            for other in self.store.batches.values()
            if other.api == "openai"
            and other.failure is None
            and other.extra["model"] == model
            and not self.store.view(other).ended
        )
        if enqueued + sum(item.tokens for item in batch.items) <= config.batch_enqueued_tokens:
            return None
        message = (
            f"Enqueued token limit reached for {model} in organization org-fake. Limit: "
            f"{config.batch_enqueued_tokens:,} enqueued tokens. Please try again once some in_progress batches "
            "have been completed."
        )
        return [{"code": "token_limit_exceeded", "message": message, "param": None, "line": None}]

    def _find(self, request: web.Request) -> Batch | web.Response:
        batch = self.store.batches.get(request.match_info["id"])
        if batch is None or batch.api != "openai":
            return self._refuse(404, f"No batch found with id '{request.match_info['id']}'.")
        return batch

    async def retrieve(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        batch = self._find(request)
        if isinstance(batch, web.Response):
            return batch
        return web.json_response(self._batch_json(batch, self.store.view(batch)))

    async def cancel(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        batch = self._find(request)
        if isinstance(batch, web.Response):
            return batch
        view = self.store.view(batch)
        if view.ended:
            return self._refuse(400, f"Cannot cancel a batch with status '{view.state}'.")
        return web.json_response(self._batch_json(batch, self.store.cancel(batch)))

    async def list(self, request: web.Request) -> web.Response:
        if (refused := self._unauthorized(request)) is not None:
            return refused
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return self._refuse(400, "limit: must be between 1 and 100.")
        mine = [batch for batch in self.store.batches.values() if batch.api == "openai"]
        chosen, more = page(mine, limit, request.query.get("after"))
        data = [self._batch_json(batch, self.store.view(batch)) for batch in chosen]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more})

    def _batch_json(self, batch: Batch, view: View) -> dict[str, Any]:
        def at(state: str) -> int | None:
            return int(batch.created_wall + view.marks[state]) if state in view.marks else None

        done = batch.items[: view.done]
        answered = [item for item in done if item.outcome == "ok"]
        failed = sum(1 for item in done if item.outcome in ("transient", "permanent"))
        output_id, error_id = self._files_of(batch, view) if view.ended else (None, None)
        errors = None if batch.failure is None else {"object": "list", "data": batch.failure}
        total = 0 if batch.failure is not None else len(batch.items)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.extra["endpoint"],
            "model": batch.extra["model"],
            "errors": errors if view.ended or view.state != "validating" else None,
            "input_file_id": batch.extra["input_file_id"],
            "completion_window": batch.extra["completion_window"],
            "status": view.state,
            "output_file_id": output_id,
            "error_file_id": error_id,
            "created_at": int(batch.created_wall),
            "in_progress_at": at("in_progress"),
            "expires_at": int(batch.created_wall) + DAY_S,
            "finalizing_at": at("finalizing"),
            "completed_at": at("completed"),
            "failed_at": at("failed"),
            "expired_at": at("expired"),
            "cancelling_at": at("cancelling"),
            "cancelled_at": at("cancelled"),
            "request_counts": {"total": total, "completed": len(answered), "failed": failed},
            "usage": _usage(answered),
            "metadata": batch.metadata,
        }

    def _files_of(self, batch: Batch, view: View) -> tuple[str | None, str | None]:
        """The output and error files of an ended batch, written the first time they are asked for."""
        if "files" not in batch.extra:
            outputs: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            for index, item in enumerate(batch.items):
                line = _result_line(batch, item, outcome_at_end(batch, view, index))
                if line is not None:
                    (outputs if item.outcome == "ok" and index < view.done else errors).append(line)
            batch.extra["files"] = tuple(
                self._add_file(name, "batch_output", _jsonl(lines))["id"] if lines else None
                for name, lines in (("batch_output.jsonl", outputs), ("batch_errors.jsonl", errors))
            )
        output_id, error_id = batch.extra["files"]
        return output_id, error_id


def _parse_line(raw: str, seen: set[str]) -> tuple[Any, tuple[str, str, str | None] | None]:
    """A line of an input file, or what is wrong with it: (code, message, param)."""
    try:
        line = json.loads(raw)
    except ValueError:
        return None, ("invalid_json_line", "This line is not parseable as valid JSON.", None)
    if not isinstance(line, dict):
        return None, ("invalid_json_line", "This line is not a JSON object.", None)
    for name in ("custom_id", "method", "url", "body"):
        if name not in line:
            return None, ("missing_required_parameter", f"Missing required parameter: '{name}'.", name)
    custom_id, body = line["custom_id"], line["body"]
    if not isinstance(custom_id, str) or not custom_id:
        return None, ("invalid_custom_id", "custom_id must be a non-empty string.", "custom_id")
    if custom_id in seen:
        message = "The custom_id for this request is a duplicate of another request in the batch."
        return None, ("duplicate_custom_id", message, "custom_id")
    seen.add(custom_id)
    if line["url"] != ENDPOINT:
        message = f"The URL provided for this request does not match the batch endpoint {ENDPOINT}."
        return None, ("mismatched_endpoint", message, "url")
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body.get("model"):
        return None, ("invalid_request", "The request body must hold a model and a list of messages.", "body")
    if INVALID in prompt_text(body["messages"]):
        return None, ("invalid_request", "This request is invalid: [[batch_invalid]].", "body")
    return line, None


def _result_line(batch: Batch, item: Item, outcome: str) -> dict[str, Any] | None:
    line_id = "batch_req_" + prompt_digest(f"{batch.id}:{item.custom_id}")
    request_id = "req_" + prompt_digest(f"{batch.id}:{item.custom_id}:request")
    if outcome == "succeeded":
        response = {"status_code": 200, "request_id": request_id, "body": item.answer}
        return {"id": line_id, "custom_id": item.custom_id, "response": response, "error": None}
    if outcome == "errored" and item.error is not None:
        status, kind, message = item.error
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        response = {"status_code": status, "request_id": request_id, "body": body}
        return {"id": line_id, "custom_id": item.custom_id, "response": response, "error": None}
    if outcome in NOT_RUN:
        code, message = NOT_RUN[outcome]
        return {
            "id": line_id,
            "custom_id": item.custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    return None


def _completion(
    completion_id: str, created: int, model: str, text: str, prompt_tokens: int, tokens: int
) -> dict[str, Any]:
    """The chat completion the online endpoint answers (server.py's `_chat`), for a batch's output file."""
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": tokens,
        "total_tokens": prompt_tokens + tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    message = {"role": "assistant", "content": expected_content(text, tokens)}
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


def _usage(answered: list[Item]) -> dict[str, Any]:
    prompt = sum(item.answer["usage"]["prompt_tokens"] for item in answered if item.answer)
    output = sum(item.answer["usage"]["completion_tokens"] for item in answered if item.answer)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }


def _file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.content),
        "created_at": stored.created_at,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def _valid_metadata(metadata: Any) -> bool:
    if not isinstance(metadata, dict) or len(metadata) > 16:
        return False
    return all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
    )


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()
