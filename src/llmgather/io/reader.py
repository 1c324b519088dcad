"""Input: JSONL files of requests, checked whole before anything is sent.

Each line is one of
    {"id": ..., "prompt": "..."}
    {"id": ..., "messages": [...]}
    {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}   (OpenAI Batch API)
Other keys (temperature, max_tokens, ...) pass through to the request. A line without an id gets its
line number. The check keeps only a 64-bit hash per id, so a million-line file is checked in a few MB.

Standard input and pipes (`<(zcat prompts.jsonl.gz)`) are read once into an anonymous temporary file,
which has no name to leave behind: it goes when the input is closed, or when the process ends however.
A file is held to what was checked: edited while a run reads it, it raises InputChanged. A JSONL line is
compared with what was checked before its request is yielded (a 64-bit hash of each line's bytes, kept by
the check: 8 bytes a line), so an edited line is never sent; CSV and Parquet rows are held by the file's
stamp only (inode, size, modification time), looked at every thousand requests and at the end.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
import sys
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn

from llmgather.errors import InputError
from llmgather.io.rows import Template, csv_rows, parquet_rows, request_from_row
from llmgather.types import Request, RequestId

_BATCH_KEYS = {"custom_id", "method", "url", "body"}
_CHAT_URLS = {"/v1/chat/completions", "/chat/completions"}
_ROLES = ("system", "developer", "user", "assistant", "tool")


class InputChanged(InputError):
    """The input was edited while a run read it: what was checked is no longer what is read."""


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
        raise InputError(f"id must be a string or an integer, got {_shown(request_id)}", source=source)


def _check_messages(messages: Any, source: str) -> None:
    """Chat messages as every provider takes them: a known role, and content that is a string or a list
    of typed parts. An assistant message that calls tools may have null content, as OpenAI allows."""
    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list", source=source)
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InputError(f"{where} must be an object with a 'role' and 'content'", source=source)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InputError(f"{where}: role {_shown(role)} is not one of {', '.join(_ROLES)}", source=source)
        content = message.get("content")
        if content is None and role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            continue
        if isinstance(content, str) or (
            isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)
        ):
            continue
        raise InputError(
            f'{where}: content must be a string or a list of parts such as {{"type": "text", "text": "..."}},'
            f" got {_shown(content)}",
            source=source,
        )


def _shown(value: Any) -> str:
    """A value as JSON, cut short: enough to recognise it in a one-line error."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


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


@dataclass(frozen=True, slots=True)
class _Stamp:
    """What a file was when it was checked: the same inode, size and modification time, or it changed."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, file: IO[bytes]) -> _Stamp:
        status = os.fstat(file.fileno())
        return cls(status.st_ino, status.st_size, status.st_mtime_ns)


# How many requests the second pass reads between two looks at the file (an fstat costs about a microsecond).
_RESTAMP_EVERY = 1000


class InputFile:
    """A file of requests, read twice: once to check it whole, then streamed to the engine.

    JSONL lines are requests as they are, or, with a template, rows; CSV and Parquet files are rows (`rows`).
    `path` is None for standard input and pipes, which are read from a spool. One pass at a time.
    Use it as a context manager (or call close()), so that a spool goes as soon as the run ends.
    """

    def __init__(
        self,
        path: Path | None,
        name: str | None = None,
        *,
        kind: str = "jsonl",
        template: Template | None = None,
        spool: IO[bytes] | None = None,
    ) -> None:
        if path is None and spool is None:
            raise ValueError("an input needs a path or a spool")
        self.path = path
        self.name = name or str(path)
        self.count = 0
        self._kind = kind
        self._template = template
        self._spool = spool
        self._checked: _Stamp | None = None
        self._lines = array("q")
        """A hash of each JSONL line's bytes as checked (blank lines too), to hold the second pass to them."""

    @classmethod
    def from_stream(
        cls, stream: IO[bytes], name: str, *, kind: str = "jsonl", template: Template | None = None
    ) -> InputFile:
        """Read a stream (standard input, a pipe) once into an anonymous temporary file, to be read twice."""
        return cls(None, name, kind=kind, template=template, spool=_spool(stream, name))

    def close(self) -> None:
        """Let go of the spool, if this input has one (its space is freed at once: it has no name)."""
        if self._spool is not None:
            self._spool.close()

    def __enter__(self) -> InputFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def check(self) -> int:
        """Parse every line; raise InputError naming file and line for the first bad one or repeated id."""
        hashes = array("q")
        lines = array("q")
        with self._open() as file:
            before = _Stamp.of(file)
            for request in self._parse(file, keep=lines):
                hashes.append(hash(request.id))
            if _Stamp.of(file) != before:
                raise InputChanged("the input changed while it was checked: check it again", source=self.name)
        self.count = len(hashes)
        if self.count == 0:
            raise InputError("no requests in the input", source=self.name)
        ordered = sorted(hashes)
        collisions = {a for a, b in itertools.pairwise(ordered) if a == b}
        if collisions:
            self._raise_first_repeat(collisions)
        self._checked, self._lines = before, lines
        return self.count

    def _raise_first_repeat(self, collisions: set[int]) -> None:
        first_line: dict[RequestId, str] = {}
        with self._open() as file:
            for request in self._parse(file):
                if hash(request.id) not in collisions:
                    continue
                if request.id in first_line:
                    raise InputError(
                        f"id {json.dumps(request.id)} repeats {first_line[request.id]}", source=request.source
                    )
                first_line[request.id] = request.source

    def __iter__(self) -> Iterator[Request]:
        """The requests; after check(), held to what was checked (InputChanged when the file was edited)."""
        with self._open() as file:
            checked = self._checked
            if checked is None:
                yield from self._parse(file)
                return
            read = 0
            try:
                self._hold(file, checked)
                for request in self._parse(file, hold=self._lines):
                    read += 1
                    if read % _RESTAMP_EVERY == 0:
                        self._hold(file, checked)
                    yield request
                self._hold(file, checked)
            except InputChanged:
                raise
            except InputError as exc:  # a line that passed the check fails now: it was edited
                message = str(exc).removeprefix(f"{exc.source}: ")
                raise InputChanged(f"the input changed during the run: {message}", source=exc.source) from None
            if read != self.count:
                self._changed()

    def _hold(self, file: IO[bytes], checked: _Stamp) -> None:
        if _Stamp.of(file) != checked:
            self._changed()

    def _changed(self) -> NoReturn:
        raise InputChanged(
            "the input changed during the run (it is not what was checked): put it back, or resume with the new one",
            source=self.name,
        )

    def _open(self) -> IO[bytes]:
        if self._spool is not None:
            # a new handle on the spool's file, at its start: closing it leaves the spool open
            fd = self._spool.fileno()
            os.lseek(fd, 0, os.SEEK_SET)
            return os.fdopen(os.dup(fd), "rb")
        assert self.path is not None
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise InputError(f"cannot read it: {exc.strerror or exc}", source=self.name) from None

    def _parse(
        self, file: IO[bytes], *, keep: array[int] | None = None, hold: array[int] | None = None
    ) -> Iterator[Request]:
        """The requests in `file`; a JSONL file's line hashes are appended to `keep`, or compared with `hold`."""
        try:
            if self._kind == "jsonl":
                yield from self._jsonl(file, keep, hold)
                return
            rows = csv_rows(file, self.name) if self._kind == "csv" else parquet_rows(file, self.name)
            for row, source, number in rows:
                yield request_from_row(row, number, source, self._template)
        except OSError as exc:  # the disk or the pipe failed mid-read
            raise InputError(f"cannot read it: {exc.strerror or exc}", source=self.name) from None

    def _jsonl(self, file: IO[bytes], keep: array[int] | None, hold: array[int] | None) -> Iterator[Request]:
        number = 0
        for number, raw in enumerate(file, start=1):
            if keep is not None:
                keep.append(hash(raw))
            elif hold is not None and (number > len(hold) or hash(raw) != hold[number - 1]):
                self._line_changed(number)
            if not raw.strip():
                continue
            source = f"{self.name}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = f"byte 0x{exc.object[exc.start]:02x} at position {exc.start + 1}"
                raise InputError(f"not UTF-8 text: {bad} (save the file as UTF-8)", source=source) from None
            try:
                record = json.loads(line.removeprefix("\ufeff") if number == 1 else line)
            except ValueError as exc:
                raise InputError(f"not valid JSON ({exc})", source=source) from None
            if self._template is not None and isinstance(record, dict):
                yield request_from_row(record, number, source, self._template)
            else:
                yield request_from_record(record, number, source)
        if hold is not None and number < len(hold):
            self._line_changed(number + 1)

    def _line_changed(self, number: int) -> NoReturn:
        raise InputChanged(
            "the input changed during the run: this line is not what was checked, so it was not sent; "
            "put it back, or resume with the new one",
            source=f"{self.name}:{number}",
        )


def _spool(stream: IO[bytes], name: str) -> IO[bytes]:
    """A copy of the stream in a temporary file without a name, so that nothing is left behind."""
    spool = tempfile.TemporaryFile(prefix="llmgather-input-")  # noqa: SIM115 (closed by InputFile.close)
    try:
        while True:
            try:
                chunk = stream.read(1 << 20)
            except OSError as exc:  # a closed standard input, a broken pipe
                raise InputError(f"cannot read it: {exc.strerror or exc}", source=name) from None
            if not chunk:
                break
            try:
                spool.write(chunk)
            except OSError as exc:
                folder = tempfile.gettempdir()
                raise InputError(f"cannot copy it to {folder}: {exc.strerror or exc}", source=name) from None
        spool.flush()
    except BaseException:
        spool.close()
        raise
    return spool


_KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", "": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def open_input(name: str, stdin: IO[bytes] | None = None, *, template: Template | None = None) -> InputFile:
    """The input named on the command line: a file, or a stream ('-' for standard input, or a pipe such as
    `<(zcat prompts.jsonl.gz)`) spooled to an anonymous temporary file first. Use it in a `with`."""
    if name == "-":
        return InputFile.from_stream(_standard_input(stdin), "<stdin>", template=template)
    path = Path(name)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"no such input file: {name}") from None
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror or exc}", source=name) from None
    if stat.S_ISDIR(mode):
        raise InputError("is a folder: give the input file in it", source=name)
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        hint = f" (for a compressed file: llmgather run <(zcat {name}) ...)" if path.suffix in (".gz", ".zst") else ""
        raise InputError(f"input is read from JSONL, CSV or Parquet files (.jsonl, .csv, .parquet){hint}", source=name)
    if stat.S_ISREG(mode):
        return InputFile(path, kind=kind, template=template)
    try:  # a pipe, FIFO or device: it can be read only once
        with path.open("rb") as stream:
            return InputFile.from_stream(stream, name, kind=kind, template=template)
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror or exc}", source=name) from None


def _standard_input(stdin: IO[bytes] | None) -> IO[bytes]:
    if stdin is not None:
        return stdin
    buffer: IO[bytes] | None = getattr(sys.stdin, "buffer", None)  # sys.stdin is None when it was closed
    if buffer is None:
        raise InputError("standard input is closed: pipe the requests in, or name the input file", source="<stdin>")
    return buffer


def request_of(item: str | Mapping[str, Any] | Request, default_id: RequestId, source: str) -> Request:
    """One prompt as the Python API takes it (a string, a record, or a Request), checked as a file's line is."""
    if isinstance(item, Request):
        return item
    return request_from_record({"prompt": item} if isinstance(item, str) else item, default_id, source)


def requests_from(items: Iterable[str | Mapping[str, Any] | Request]) -> list[Request]:
    """Requests from what the Python API is given: prompts, records or Requests. Ids default to the index."""
    requests = []
    first: dict[RequestId, str] = {}
    for index, item in enumerate(items):
        request = request_of(item, index, f"item {index}")
        if request.id in first:
            raise InputError(f"id {json.dumps(request.id)} repeats {first[request.id]}", source=f"item {index}")
        first[request.id] = f"item {index}"
        requests.append(request)
    return requests
