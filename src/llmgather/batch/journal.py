"""The journal of a batch run: what was submitted, so that a crash never loses a batch or pays for one twice.

It is a JSON-lines file beside the output (`OUT.batches.jsonl`), appended to and synced at each step:

    {"run": "3f9c...", "started": 1764160000.0}                 the run's tag and when it began, once
    {"part": 4, "model": "openai/gpt-5-mini", "intent": <time>, "ids": [...]}  before a batch is submitted
                                                    (and "api_base", when the model has one of its own)
    {"part": 4, "batch": "batch_abc", "submitted": <time>}                     once the provider named it
    {"part": 4, "collected": <time>}                                           its results are all handed on
    {"part": 4, "refused": <time>}                                             never created, or failed whole
    {"part": 4, "cancelled": <time>}                          given up by `llmgather batches OUT --cancel`

A part is live from its intent until it is collected or refused. On a restart, a live part with a batch id
is reattached; one with only an intent was perhaps created just before the crash, so the provider is asked
(`BatchApi.find`, by the run's tag and the part's number) before it is sent again. A request's custom id in
a batch is `<run>-p<part>-<index into ids>` (Anthropic allows [A-Za-z0-9_-]{1,64}): a batch of another run,
taken for this one's, answers none of its requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmgather.errors import InputError, OutputError
from llmgather.types import RequestId

SUFFIX = ".batches.jsonl"


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + SUFFIX)


def custom_id(run: str, part: int, index: int) -> str:
    return f"{run}-p{part}-{index}"


@dataclass(slots=True)
class Part:
    """One batch of one model's requests, as the journal knows it."""

    run: str
    number: int
    model: str
    ids: list[RequestId]
    intent_at: float
    api_base: str | None = None
    """The endpoint it was sent to, when not the provider's own (so `llmgather batches OUT` can ask it)."""
    batch_id: str | None = None
    submitted_at: float | None = None
    ended: bool = False
    """Collected or refused: nothing of it is live at the provider."""
    refused: bool = False
    """Never created, or failed whole at the provider: it answered none of its requests."""
    cancelled: bool = False
    """Cancelled by `llmgather batches OUT --cancel`: given up, though what it answered can still be collected."""

    @property
    def live(self) -> bool:
        return not self.ended

    def index_of(self, named: str) -> int | None:
        """The index into `ids` a custom id (`custom_id`) of this part names, or None if it names none."""
        prefix, _, index = named.rpartition("-")
        if prefix != custom_id(self.run, self.number, 0).rpartition("-")[0]:
            return None
        if not index.isdigit() or int(index) >= len(self.ids):
            return None
        return int(index)


@dataclass(slots=True)
class Journal:
    path: Path
    run: str
    parts: dict[int, Part] = field(default_factory=dict)
    started: float | None = None
    """When the run began (Unix time): a restart keeps its `--by`."""
    _fd: int | None = field(default=None, repr=False)
    submitting: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    """Held from a part's intent to its batch id by a provider that keeps no tags (Anthropic), so that at most
    one part of the run is ever unjournaled: a restart then tells its batch apart from the run's others."""

    @classmethod
    def open(cls, path: Path, *, fresh: bool) -> Journal:
        """The journal at `path`, read back (`fresh`: started anew, as `--overwrite` does)."""
        if fresh or not path.exists():
            journal = cls(path, secrets.token_hex(8), started=round(time.time(), 3))
            journal._start(truncate=True)
            journal._append({"run": journal.run, "started": journal.started})
            return journal
        run, started, parts = _read(path)
        _cut_torn_line(path)
        journal = cls(path, run, parts, started)
        journal._start(truncate=False)
        return journal

    @staticmethod
    def peek(path: Path) -> Journal | None:
        """The journal at `path` read back without opening it for writing, or None if there is none."""
        if not path.exists():
            return None
        run, started, parts = _read(path)
        return Journal(path, run, parts, started)

    def live_parts(self, model: str | None = None) -> list[Part]:
        return [p for p in self.parts.values() if p.live and (model is None or p.model == model)]

    @property
    def next_part(self) -> int:
        """The number the next part `intend`ed gets."""
        return max(self.parts, default=0) + 1

    def intend(self, model: str, ids: Sequence[RequestId], api_base: str | None = None) -> Part:
        """Record a part before it is submitted."""
        number = self.next_part
        part = Part(self.run, number, model, list(ids), time.time(), api_base)
        entry = {"part": number, "model": model, "intent": round(part.intent_at, 3), "ids": part.ids}
        self._append(entry | ({"api_base": api_base} if api_base is not None else {}))
        self.parts[number] = part
        return part

    def submitted(self, part: Part, batch_id: str) -> None:
        part.batch_id, part.submitted_at = batch_id, time.time()
        self._append({"part": part.number, "batch": batch_id, "submitted": round(part.submitted_at, 3)})

    def collected(self, part: Part) -> None:
        part.ended = True
        self._append({"part": part.number, "collected": round(time.time(), 3)})

    def cancelled(self, part: Part) -> None:
        part.cancelled = True
        self._append({"part": part.number, "cancelled": round(time.time(), 3)})

    def refused(self, part: Part) -> None:
        part.ended = part.refused = True
        self._append({"part": part.number, "refused": round(time.time(), 3)})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _start(self, *, truncate: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise _unwritable(self.path, exc) from None

    def _append(self, entry: dict[str, Any]) -> None:
        assert self._fd is not None, "the journal is closed"
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(28, "No space left on device")
            os.fsync(self._fd)  # a batch id not on disk is a batch a restart cannot find
        except OSError as exc:
            raise _unwritable(self.path, exc) from None


def _unwritable(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write the batch journal: {exc.strerror or exc}", path=str(path))


def _read(path: Path) -> tuple[str, float | None, dict[int, Part]]:
    run: str | None = None
    started: float | None = None
    parts: dict[int, Part] = {}
    for number, entry in _entries(path):
        source = f"{path}:{number}"
        if "run" in entry:
            run = str(entry["run"])
            began = entry.get("started")
            started = float(began) if isinstance(began, int | float) and not isinstance(began, bool) else None
            continue
        part_number = entry.get("part")
        if not isinstance(part_number, int):
            raise InputError("not a batch journal line (no part number)", source=source)
        try:
            if "intent" in entry:
                ids = entry["ids"]
                if not isinstance(ids, list):
                    raise TypeError
                api_base = entry.get("api_base")
                parts[part_number] = Part(
                    run or "", part_number, str(entry["model"]), ids, float(entry["intent"]), api_base
                )
                continue
            part = parts.get(part_number)
            if part is None:
                raise InputError(f"part {part_number} has no intent line before it", source=source)
            if "batch" in entry:
                part.batch_id, part.submitted_at = str(entry["batch"]), float(entry["submitted"])
            elif "collected" in entry:
                part.ended = True
            elif "refused" in entry:
                part.ended = part.refused = True
            elif "cancelled" in entry:
                part.cancelled = True
        except (KeyError, TypeError, ValueError):
            raise InputError(
                "a batch journal line lacks what it needs: the journal is damaged", source=source
            ) from None
    if run is None:
        raise InputError("not a batch journal (its first line names no run)", source=str(path))
    return run, started, parts


def _cut_torn_line(path: Path) -> None:
    """Cut a last line a crash left half-written, so that the next entry starts on a line of its own."""
    try:
        with path.open("rb+") as file:
            data = file.read()
            if data and not data.endswith(b"\n"):
                file.truncate(data.rfind(b"\n") + 1)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def _entries(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise InputError(f"cannot read the batch journal: {exc.strerror or exc}", source=str(path)) from None
    last = len(lines)
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except ValueError:
            if number >= last - 1:
                continue  # the last line cut short by a crash mid-write: that step did not happen
            raise InputError("not valid JSON: the batch journal is damaged", source=f"{path}:{number}") from None
        if not isinstance(entry, dict):
            raise InputError("not a batch journal line", source=f"{path}:{number}")
        yield number, entry
