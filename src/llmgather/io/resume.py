"""Picking up an output file where a run left it: what is done, what to send again, a torn line repaired.

A run appends whole lines and flushes each, so a crash can leave at most one torn line, the last. Resuming
cuts it off. Results that are superseded (errors, when they are to be retried) are dropped from the file
before the run appends again, so the final output holds each (id, model) exactly once.

Each line carries the digest of the request it answers: `ResumeState.mismatch` tells when an id now names
another request (an input without ids, a line deleted), so that old answers are not kept for new prompts.
A line that is not a result, or whose id is neither a string nor an integer, is an InputError naming it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmgather.errors import InputError
from llmgather.types import Request, RequestId, Result

_FIRST_LINE_LIMIT = 16 << 20
"""Enough of a file's first line to tell whether it is a result line."""
_OFFSET_BITS = 48
"""Up to 256 TB of output: enough room for a line's offset in the packed entry."""


@dataclass(slots=True)
class ResumeState:
    kept: dict[str, dict[RequestId, int]] = field(default_factory=dict)
    """What is already answered and kept, not to be sent again: model -> id -> one packed int,
    `digest << 50 | offset << 2 | has_digest << 1 | succeeded`, where `offset` is where its line starts and
    `digest` is the request's (`Request.digest()`). Nested and packed, not tuples or strings: this holds an
    entry for every result, maybe millions."""
    succeeded: int = 0
    failed_kept: int = 0
    """Error results kept as final (without --retry-failed)."""
    failed_to_retry: int = 0
    torn_bytes: int = 0
    """Bytes of a torn last line cut off."""
    untidy: bool = False
    """The file holds more than the kept lines (a torn line, superseded or dropped ones): `repair_output`
    rewrites it."""
    path: Path | None = None
    """The output these results were read from (for messages)."""

    @property
    def done(self) -> int:
        return sum(len(ids) for ids in self.kept.values())

    def done_for(self, model: str) -> int:
        """How many of `model`'s results are kept (a resume sends that many fewer to it)."""
        return len(self.kept.get(model, ()))

    def skips(self, request_id: RequestId, model: str) -> bool:
        ids = self.kept.get(model)
        return ids is not None and request_id in ids

    def mismatch(self, request: Request, model: str) -> bool:
        """True when this (id, model) was answered for a different request than `request`: the input changed.

        Lines written before results carried a digest never mismatch."""
        ids = self.kept.get(model)
        packed = ids.get(request.id) if ids is not None else None
        if packed is None or not packed & 2:
            return False
        return packed >> (_OFFSET_BITS + 2) != int(request.digest(), 16)

    def mismatch_message(self, request: Request, model: str) -> str:
        """One line for a refused resume: which input line, which output line, and what to do."""
        where = f"{request.source}: " if request.source else ""
        answered = self._line_of(request.id, model)
        if _numbered(request):
            advice = (
                "the input changed since that run (lines added, removed or edited?). "
                'Give each line an "id", or start over with --overwrite'
            )
        else:
            advice = (
                "that request was edited since that run: restore it, or delete that output line to send it "
                "again, or start over with --overwrite"
            )
        return f"{where}id {json.dumps(request.id)} was answered in {answered} for a different request; {advice}."

    def _line_of(self, request_id: RequestId, model: str) -> str:
        """`out.jsonl:N` for the kept line of (id, model), found again by reading the file: this is asked once,
        when a run is refused, so no line number is kept for every result."""
        if self.path is None:
            return "the output"
        found, text = 0, json.dumps(request_id, ensure_ascii=False).encode()
        try:
            with self.path.open("rb") as file:
                for number, line in enumerate(file, start=1):
                    if text in line and line.endswith(b"\n"):  # a cheap filter before parsing
                        record = json.loads(line)
                        same = type(record.get("id")) is type(request_id) and record.get("id") == request_id
                        found = number if same and record.get("model") == model else found
        except (OSError, ValueError):
            found = 0
        return f"{self.path}:{found}" if found else str(self.path)


def _numbered(request: Request) -> bool:
    """Whether the id is the request's place (a line number, an index) rather than one the input gives."""
    number = request.id
    if isinstance(number, bool) or not isinstance(number, int):
        return False
    return request.source in ("", f"item {number}") or request.source.endswith(f":{number}")


def check_fresh(path: Path, *, overwrite: bool) -> None:
    """Refuse to start a run over an output that holds something, unless told to replace it."""
    if overwrite or not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb") as file:
        first = file.readline(_FIRST_LINE_LIMIT)
    if _result_record(first) is None:
        raise InputError(
            f"{path} exists and is not an llmgather output: give -o a new file "
            "(--overwrite would replace what it holds)"
        )
    raise InputError(
        f"{path} already holds results: add --resume to finish that run (with --retry-failed to send "
        "its failed requests again), or --overwrite to start over"
    )


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each result line of an output, each checked (a bad line is an InputError
    naming it). A last line without its newline is left out: a run is writing it, or died writing it (a
    resume cuts it off). Read once, front to back, so `path` may be a pipe."""
    try:
        file = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror}", source=str(path)) from None
    with file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield number, _checked_record(line, path, number)


def read_results(path: Path) -> Iterator[Result]:
    """The results an output file holds (none if there is no such file), as `read_records` reads them."""
    if not path.exists():
        return
    for number, record in read_records(path):
        try:
            yield Result.from_dict(record)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a result line ({exc})", source=f"{path}:{number}") from None


def prepare_resume(path: Path, *, retry_failed: bool, repair: bool = True) -> ResumeState:
    """Read an existing output, repair a torn last line, drop what is to be sent again; say what is done.

    With `repair=False` the file is left as it is (for a dry run, or to `repair` it later). Whoever repairs
    must hold the output's lock.
    """
    state = ResumeState(path=path)
    if not path.exists():
        return state
    kept = state.kept
    lines = 0
    offset = 0
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                state.torn_bytes = len(line)
                break
            lines += 1
            if line.strip():
                request_id, model, packed = _packed(_checked_record(line, path, number))
                ids = kept.setdefault(model, {})
                if packed & 1 or not retry_failed:
                    ids[request_id] = packed | offset << 2  # a later line for the same key supersedes an earlier one
                else:
                    ids.pop(request_id, None)
                    state.failed_to_retry += 1
            offset += len(line)
    state.succeeded = sum(packed & 1 for ids in kept.values() for packed in ids.values())
    state.failed_kept = state.done - state.succeeded
    state.untidy = bool(state.torn_bytes) or state.done != lines
    if repair:
        repair_output(path, state)
    return state


def repair_output(path: Path, state: ResumeState) -> None:
    """Rewrite `path` (as `prepare_resume` read it into `state`) to hold the kept lines only, atomically."""
    if state.untidy:
        _rewrite(path, sorted(packed >> 2 & _OFFSET_MASK for ids in state.kept.values() for packed in ids.values()))
        state.untidy = False


_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


def _checked_record(line: bytes, path: Path, number: int) -> dict[str, Any]:
    """One output line as a record with an id, a model and a digest of the right types, or a line-level error."""
    record = _result_record(line)
    if record is None:
        if number == 1:
            raise InputError(f"{path} is not an llmgather output (line 1 is not a result): is -o the right file?")
        raise InputError(
            "not a result line: fix or delete that line (an output holds result lines only)", source=f"{path}:{number}"
        )
    request_id, model, digest = record["id"], record["model"], record.get("digest")
    where = f"{path}:{number}"
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        raise InputError(f"id must be a string or an integer, got {json.dumps(request_id)}", source=where)
    if not isinstance(model, str):
        raise InputError(f"model must be a string, got {json.dumps(model)}", source=where)
    if digest is not None and (not isinstance(digest, str) or not _HEX.fullmatch(digest)):
        raise InputError(f"digest must be a hexadecimal string, got {json.dumps(digest)}", source=where)
    return record


def _packed(record: dict[str, Any]) -> tuple[RequestId, str, int]:
    """(id, model, digest << 50 | has_digest << 1 | succeeded) of a checked record; the offset is added later."""
    packed = int(record.get("error") is None)
    digest = record.get("digest")
    if digest is not None:
        packed |= int(digest, 16) << (_OFFSET_BITS + 2) | 2
    return record["id"], record["model"], packed


_HEX = re.compile(r"[0-9a-f]{1,32}")


def _result_record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "id" in record and "model" in record else None


def _rewrite(path: Path, offsets: list[int]) -> None:
    """Keep only the lines at `offsets`, in one step: a crash now leaves the old file or the new, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out, path.open("rb") as source:
            for at in offsets:
                source.seek(at)
                out.write(source.readline())
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the replacement itself durable (the new name in the folder), where the system allows it."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
