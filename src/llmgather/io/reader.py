"""Input: JSONL files of requests, checked whole before anything is sent.

Each line is one of
    {"id": ..., "prompt": "..."}
    {"id": ..., "messages": [...]}
    {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}   (OpenAI Batch API)
Other keys (temperature, max_tokens, ...) pass through to the request. A line without an id gets its
line number. The check keeps only a 64-bit hash per id, so a million-line file is checked in a few MB.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from llmgather.errors import InputError
from llmgather.io.rows import Template, csv_rows, parquet_rows, request_from_row
from llmgather.types import Request, RequestId

_BATCH_KEYS = {"custom_id", "method", "url", "body"}
_CHAT_URLS = {"/v1/chat/completions", "/chat/completions"}


def request_from_record(record: Any, default_id: RequestId, source: str = "") -> Request:
    """One input record (a parsed JSON line, or a dict given to the API) as a Request."""
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {type(record).__name__}", source=source)
    if "custom_id" in record and "body" in record:
        return _from_batch_line(record, source)
    params = dict(record)
    request_id = params.pop("id", default_id)
    _check_id(request_id, source)
    prompt = params.pop("prompt", None)
    messages = params.pop("messages", None)
    if prompt is not None and messages is not None:
        raise InputError("has both 'prompt' and 'messages': give one", source=source)
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError("'prompt' must be a string", source=source)
        messages = [{"role": "user", "content": prompt}]
    elif messages is None:
        raise InputError("has no 'prompt' or 'messages'", source=source)
    _check_messages(messages, source)
    _check_params(params, source)
    return Request(id=request_id, messages=messages, params=params, source=source)


def _from_batch_line(record: dict[str, Any], source: str) -> Request:
    if record.get("method", "POST") != "POST" or record.get("url", "/v1/chat/completions") not in _CHAT_URLS:
        raise InputError("only POST /v1/chat/completions batch lines are supported", source=source)
    body = record["body"]
    if not isinstance(body, dict):
        raise InputError("'body' must be a JSON object", source=source)
    params = {k: v for k, v in body.items() if k not in ("model", "messages")}
    if "messages" not in body:
        raise InputError("batch line's body has no 'messages'", source=source)
    _check_id(record["custom_id"], source)
    _check_messages(body["messages"], source)
    _check_params(params, source)
    return Request(id=record["custom_id"], messages=body["messages"], params=params, source=source)


def _check_id(request_id: Any, source: str) -> None:
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        raise InputError(f"id must be a string or an integer, got {json.dumps(request_id)}", source=source)


def _check_messages(messages: Any, source: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list", source=source)
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise InputError("each message must be an object with a 'role'", source=source)


# Parameters whose wrong type every provider refuses with a 400: caught here, before any is sent, as
# (JSON type, smallest value, what is expected). Ranges beyond that differ by provider and are left to it.
_NUMBER = (int, float)
_PARAM_TYPES: dict[str, tuple[type | tuple[type, ...], float, str]] = {
    "max_tokens": (int, 1, "a whole number of at least 1"),
    "max_completion_tokens": (int, 1, "a whole number of at least 1"),
    "n": (int, 1, "a whole number of at least 1"),
    "temperature": (_NUMBER, 0, "a number of at least 0"),
    "top_p": (_NUMBER, 0, "a number of at least 0"),
    "stream": (bool, 0, "true or false"),
}


def _check_params(params: dict[str, Any], source: str) -> None:
    for name, (kind, smallest, expected) in _PARAM_TYPES.items():
        value = params.get(name)
        if value is None:
            continue
        if kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = (
                isinstance(value, kind)
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and value >= smallest
            )
        if not ok:
            raise InputError(f"{name!r} must be {expected}, got {json.dumps(value)}", source=source)


class JsonlInput:
    """A file of requests, read twice: once to check it whole, then streamed to the engine.

    JSONL lines are requests as they are, or, with a template, rows; CSV and Parquet files are rows (`rows`).
    """

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        *,
        spooled: bool = False,
        kind: str = "jsonl",
        template: Template | None = None,
    ) -> None:
        self.path = path
        self.name = name or str(path)
        self.count = 0
        self._spooled = spooled
        self._kind = kind
        self._template = template

    def discard_spool(self) -> None:
        """Remove the temporary copy of standard input, if this is one."""
        if self._spooled:
            self.path.unlink(missing_ok=True)

    def check(self) -> int:
        """Parse every line; raise InputError naming file and line for the first bad one or repeated id."""
        hashes = array("q")
        for request in self._parse():
            hashes.append(hash(request.id))
        self.count = len(hashes)
        if self.count == 0:
            raise InputError("no requests in the input", source=self.name)
        ordered = sorted(hashes)
        collisions = {a for a, b in itertools.pairwise(ordered) if a == b}
        if collisions:
            self._raise_first_repeat(collisions)
        return self.count

    def _raise_first_repeat(self, collisions: set[int]) -> None:
        first_line: dict[RequestId, str] = {}
        for request in self._parse():
            if hash(request.id) not in collisions:
                continue
            if request.id in first_line:
                raise InputError(f"id {json.dumps(request.id)} repeats {first_line[request.id]}", source=request.source)
            first_line[request.id] = request.source

    def __iter__(self) -> Iterator[Request]:
        return self._parse()

    def _parse(self) -> Iterator[Request]:
        if self._kind != "jsonl":
            rows = csv_rows(self.path, self.name) if self._kind == "csv" else parquet_rows(self.path, self.name)
            for row, source, number in rows:
                yield request_from_row(row, number, source, self._template)
            return
        with self.path.open("rb") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                source = f"{self.name}:{number}"
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"not valid JSON ({exc})", source=source) from None
                if self._template is not None and isinstance(record, dict):
                    yield request_from_row(record, number, source, self._template)
                else:
                    yield request_from_record(record, number, source)


_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", "": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def open_input(name: str, stdin: IO[bytes] | None = None, *, template: Template | None = None) -> JsonlInput:
    """The input named on the command line; '-' spools standard input (JSONL) to a temporary file first."""
    if name == "-":
        spool = tempfile.NamedTemporaryFile(prefix="llmgather-stdin-", suffix=".jsonl", delete=False)  # noqa: SIM115
        with spool:
            shutil.copyfileobj(stdin or sys.stdin.buffer, spool)
        return JsonlInput(Path(spool.name), name="<stdin>", spooled=True, template=template)
    path = Path(name)
    if not path.is_file():
        raise InputError(f"no such input file: {name}")
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{name}: input is read from JSONL, CSV or Parquet files (.jsonl, .csv, .parquet)")
    return JsonlInput(path, kind=kind, template=template)


def requests_from(items: Iterable[str | dict[str, Any] | Request]) -> list[Request]:
    """Requests from what the Python API is given: prompts, records or Requests. Ids default to the index."""
    requests = []
    seen: set[RequestId] = set()
    for index, item in enumerate(items):
        if isinstance(item, Request):
            request = item
        elif isinstance(item, str):
            request = Request.from_prompt(index, item)
        else:
            request = request_from_record(item, index, f"item {index}")
        if request.id in seen:
            raise InputError(f"id {json.dumps(request.id)} is repeated", source=f"item {index}")
        seen.add(request.id)
        requests.append(request)
    return requests
