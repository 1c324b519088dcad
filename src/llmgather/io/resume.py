"""Picking up an output file where a run left it: what is done, what to send again, a torn line repaired.

A run appends whole lines and flushes each, so a crash can leave at most one torn line, the last. Resuming
cuts it off. Results that are superseded (errors, when they are to be retried) are dropped from the file
before the run appends again, so the final output holds each (id, model) exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmgather.errors import InputError
from llmgather.types import Result

ResultKey = tuple[Hashable, str]
"""(id, model): one request to one model; what resume and the output count once."""


@dataclass(slots=True)
class ResumeState:
    done: set[ResultKey] = field(default_factory=set)
    """What is already answered and kept: not sent again."""
    succeeded: int = 0
    failed_kept: int = 0
    """Error results kept as final (without --retry-failed)."""
    failed_to_retry: int = 0
    torn_bytes: int = 0
    """Bytes of a torn last line cut off."""

    def skips(self, request_id: Hashable, model: str) -> bool:
        return (request_id, model) in self.done


def open_output(path: Path, *, resume: bool, retry_failed: bool = False, overwrite: bool = False) -> ResumeState:
    """Make `path` ready to append this run's results to; say what an earlier run already did.

    Never clobbers silently: an output that holds results is continued (`resume`) or replaced (`overwrite`).
    """
    if resume and overwrite:
        raise InputError("--resume continues the output and --overwrite replaces it: choose one")
    if resume:
        return prepare_resume(path, retry_failed=retry_failed)
    if path.exists() and path.stat().st_size > 0 and not overwrite:
        raise InputError(
            f"{path} already holds results: add --resume to finish that run (with --retry-failed to send "
            "its failed requests again), or --overwrite to start over"
        )
    path.write_bytes(b"")
    return ResumeState()


def read_results(path: Path) -> Iterator[Result]:
    """The results an output file holds (after `open_output` has repaired it)."""
    if not path.exists():
        return
    with path.open("rb") as file:
        for line in file:
            if line.strip():
                yield Result.from_dict(json.loads(line))


def key_of(record: dict[str, object]) -> ResultKey:
    request_id = record["id"]
    assert isinstance(request_id, Hashable)
    return request_id, str(record["model"])


def prepare_resume(path: Path, *, retry_failed: bool, repair: bool = True) -> ResumeState:
    """Read an existing output, repair a torn last line, drop what is to be sent again; say what is done.

    With `repair=False` the file is left as it is (for a dry run).
    """
    state = ResumeState()
    if not path.exists():
        return state
    kept: dict[ResultKey, tuple[int, int, bool]] = {}  # key -> (offset, length, ok), the file streamed once
    lines = 0
    offset = 0
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                state.torn_bytes = len(line)
                break
            lines += 1
            if line.strip():
                record = _parse_result(line, path, number)
                key, ok = key_of(record), record.get("error") is None
                if ok or not retry_failed:
                    kept[key] = (offset, len(line), ok)  # a later line for the same key supersedes an earlier one
                else:
                    kept.pop(key, None)
                    state.failed_to_retry += 1
            offset += len(line)
    state.done = set(kept)
    state.succeeded = sum(ok for _, _, ok in kept.values())
    state.failed_kept = len(kept) - state.succeeded
    if repair and (state.torn_bytes or len(kept) != lines):
        _rewrite(path, sorted((at, length) for at, length, _ in kept.values()))
    return state


def _parse_result(line: bytes, path: Path, number: int) -> dict[str, object]:
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "id" not in record or "model" not in record:
        raise InputError(
            f"{path}:{number}: not a result line, so this file cannot be resumed; "
            "move it aside or start again with --overwrite",
            source=f"{path}:{number}",
        )
    return record


def _rewrite(path: Path, spans: list[tuple[int, int]]) -> None:
    """Keep only `spans` of the file, in one step: a crash now leaves the old file or the new, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out, path.open("rb") as source:
            for at, length in spans:
                source.seek(at)
                out.write(source.read(length))
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
