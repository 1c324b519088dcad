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
    kept: dict[str, dict[Hashable, int]] = field(default_factory=dict)
    """What is already answered and kept, not to be sent again: model -> id -> its line's offset × 2, + 1 if
    it succeeded. (Nested and packed, not tuples: this holds an entry for every result, maybe millions.)"""
    succeeded: int = 0
    failed_kept: int = 0
    """Error results kept as final (without --retry-failed)."""
    failed_to_retry: int = 0
    torn_bytes: int = 0
    """Bytes of a torn last line cut off."""

    @property
    def done(self) -> int:
        return sum(len(ids) for ids in self.kept.values())

    def skips(self, request_id: Hashable, model: str) -> bool:
        ids = self.kept.get(model)
        return ids is not None and request_id in ids


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
                record = _parse_result(line, path, number)
                (request_id, model), ok = key_of(record), record.get("error") is None
                ids = kept.setdefault(model, {})
                if ok or not retry_failed:
                    ids[request_id] = offset * 2 + ok  # a later line for the same key supersedes an earlier one
                else:
                    ids.pop(request_id, None)
                    state.failed_to_retry += 1
            offset += len(line)
    state.succeeded = sum(packed & 1 for ids in kept.values() for packed in ids.values())
    state.failed_kept = state.done - state.succeeded
    if repair and (state.torn_bytes or state.done != lines):
        _rewrite(path, sorted(packed >> 1 for ids in kept.values() for packed in ids.values()))
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
