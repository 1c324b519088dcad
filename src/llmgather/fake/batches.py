"""The fake provider's batches: what OpenAI's Batches and Anthropic's Message Batches share.

A batch is a list of items decided when it is created (each item's answer or error, from the seed), and a
clock: no task runs per batch. Its state is computed when it is read, from the time since its creation:

    OpenAI     validating (first 10%) -> in_progress -> finalizing (last 10%) -> completed | expired
    Anthropic  in_progress -> ended

Items are processed evenly over the processing time, so counts grow. A cancel freezes the items done so
far; after a short `cancelling` step (10%) the rest are cancelled. A batch is settled (its end logged and
its answers counted) the first time it is seen ended: on any read, in the stats, or at shutdown.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmgather.fake.common import FakeConfig, prompt_digest

PERMANENT = "[[batch_permanent]]"
INVALID = "[[batch_invalid]]"
VALIDATING = 0.1
"""Share of the batch time OpenAI spends validating; as much again finalizing, and cancelling."""
DAY_S = 24 * 3600


@dataclass(slots=True)
class Item:
    """One request of a batch and what it will get."""

    custom_id: str
    digest: str
    """The prompt digest the online log lines use."""
    tokens: int
    outcome: str
    """ok | transient | permanent | expire"""
    answer: dict[str, Any] | None = None
    """The chat completion or message an `ok` item gets: what the online endpoint answers."""
    error: tuple[int, str, str] | None = None
    """(status, type, message) of a `transient` or `permanent` item."""


@dataclass(slots=True)
class Batch:
    id: str
    api: str
    seq: int
    items: list[Item]
    created: float
    """On the store's monotonic clock."""
    created_wall: float
    metadata: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """API fields kept as given: endpoint, input_file_id, completion_window, model."""
    failure: list[dict[str, Any]] | None = None
    """OpenAI's `errors.data` of a batch that fails validation."""
    cancel_at: float | None = None
    """Seconds after creation that a cancel came."""
    settled: bool = False


@dataclass(slots=True)
class View:
    """A batch as of one moment."""

    state: str
    done: int
    """Items processed: answered or errored, in order."""
    ended: bool
    marks: dict[str, float]
    """Seconds after creation of each step reached: in_progress, finalizing, cancelling, the end state."""


class BatchStore:
    """Every batch and file, the clock they run on, and what the log and stats learn of them."""

    def __init__(
        self,
        config: FakeConfig,
        log: Callable[[dict[str, Any]], None],
        on_answer: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.log = log
        self.on_answer = on_answer
        self.clock = clock
        self.wall = wall
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, StoredFile] = {}
        self._seq = 0
        self._salt = random.getrandbits(48)

    # Creation.

    def next_id(self, prefix: str, width: int) -> tuple[int, str]:
        """A sequence number (batches are listed and drawn by it) and an id of `width` (at most 24) characters."""
        self._seq += 1
        tail = f"{self._seq:08x}"
        return self._seq, prefix + prompt_digest(f"{self._salt}:{self._seq}")[: width - len(tail)] + tail

    def outcome(self, seq: int, custom_id: str, text: str) -> str:
        """What an item gets: drawn per batch and request, so a retry in a later batch gets a fresh draw."""
        if PERMANENT in text:
            return "permanent"
        draw = random.Random(f"{self.config.seed}:{seq}:{custom_id}:batch")
        if draw.random() < self.config.batch_expire_rate:
            return "expire"
        if draw.random() < self.config.batch_error_rate:
            return "transient"
        return "ok"

    def add(self, batch: Batch, prompts: list[str]) -> None:
        self.batches[batch.id] = batch
        self.log(
            {
                "t": round(batch.created_wall, 4),
                "event": "batch_created",
                "api": batch.api,
                "batch": batch.id,
                "custom_ids": [item.custom_id for item in batch.items],
                "prompts": prompts,
                "metadata": batch.metadata or {},
            }
        )

    # Reading.

    def view(self, batch: Batch) -> View:
        view = progress(batch, self.clock() - batch.created, self.config.batch_seconds)
        if view.ended and not batch.settled:
            self._settle(batch, view)
        return view

    def cancel(self, batch: Batch) -> View:
        view = self.view(batch)
        if not view.ended and batch.cancel_at is None:
            batch.cancel_at = self.clock() - batch.created
            self.log({"t": round(self.wall(), 4), "event": "batch_cancel", "api": batch.api, "batch": batch.id})
            view = self.view(batch)
        return view

    def stats(self) -> dict[str, Any]:
        states = Counter(self.view(batch).state for batch in self.batches.values())
        requests = sum(len(batch.items) for batch in self.batches.values())
        return {"created": len(self.batches), "by_state": dict(sorted(states.items())), "requests": requests}

    def settle_all(self) -> None:
        """At shutdown: log the end of every batch that ended unseen."""
        for batch in self.batches.values():
            self.view(batch)

    def _settle(self, batch: Batch, view: View) -> None:
        batch.settled = True
        answered = [item for item in batch.items[: view.done] if item.outcome == "ok"]
        for item in answered:
            self.on_answer(item.digest)
        counts = Counter(outcome_at_end(batch, view, i) for i in range(len(batch.items)))
        self.log(
            {
                "t": round(batch.created_wall + view.marks[view.state], 4),
                "event": "batch_ended",
                "api": batch.api,
                "batch": batch.id,
                "state": view.state,
                "counts": dict(sorted(counts.items())),
                "succeeded": [item.custom_id for item in answered],
            }
        )


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int


def progress(batch: Batch, elapsed: float, seconds: float) -> View:
    """Where a batch stands `elapsed` seconds after its creation, for a batch that takes `seconds`."""
    openai = batch.api == "openai"
    start, stop = (VALIDATING * seconds, (1 - VALIDATING) * seconds) if openai else (0.0, seconds)
    marks: dict[str, float] = {}
    if openai and batch.failure is not None:
        marks["failed"] = start
        return View("failed" if elapsed >= start else "validating", 0, elapsed >= start, marks)
    if batch.cancel_at is not None and batch.cancel_at < seconds:
        done = _done(len(batch.items), batch.cancel_at, start, stop)
        end = batch.cancel_at + VALIDATING * seconds
        _mark_steps(marks, min(elapsed, batch.cancel_at), start, stop, openai)
        marks["cancelling"] = batch.cancel_at
        final = "cancelled" if openai else "ended"
        marks[final] = end
        if elapsed >= end:
            return View(final, done, True, marks)
        return View("cancelling" if openai else "canceling", done, False, marks)
    done = _done(len(batch.items), elapsed, start, stop)
    _mark_steps(marks, elapsed, start, stop, openai)
    if elapsed >= seconds:
        final = "ended"
        if openai:
            final = "expired" if any(item.outcome == "expire" for item in batch.items) else "completed"
        marks[final] = seconds
        return View(final, done, True, marks)
    if not openai:
        return View("in_progress", done, False, marks)
    state = "validating" if elapsed < start else "in_progress" if elapsed < stop else "finalizing"
    return View(state, done, False, marks)


def _done(n: int, elapsed: float, start: float, stop: float) -> int:
    if elapsed <= start:
        return 0
    if elapsed >= stop:
        return n
    return min(n, int(n * (elapsed - start) / (stop - start)))


def _mark_steps(marks: dict[str, float], elapsed: float, start: float, stop: float, openai: bool) -> None:
    if not openai:
        return
    if elapsed >= start:
        marks["in_progress"] = start
    if elapsed >= stop:
        marks["finalizing"] = stop


def outcome_at_end(batch: Batch, view: View, index: int) -> str:
    """succeeded | errored | canceled | expired: what an item came to once its batch ended."""
    item = batch.items[index]
    if batch.failure is not None:
        return "not_run"
    if index < view.done and item.outcome != "expire":
        return "succeeded" if item.outcome == "ok" else "errored"
    return "canceled" if batch.cancel_at is not None else "expired"


def page(batches: list[Batch], limit: int, after: str | None, before: str | None = None) -> tuple[list[Batch], bool]:
    """A page of batches, newest first: those after `after` (older), or just before `before` (newer)."""
    newest_first = sorted(batches, key=lambda b: b.seq, reverse=True)
    ids = [b.id for b in newest_first]
    if after is not None:
        newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
    elif before is not None:
        end = ids.index(before) if before in ids else 0
        chosen = newest_first[max(0, end - limit) : end]
        return chosen, end - limit > 0
    return newest_first[:limit], len(newest_first) > limit


def valid_custom_id(custom_id: str) -> bool:
    return _CUSTOM_ID.fullmatch(custom_id) is not None


_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
