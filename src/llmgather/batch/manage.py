"""`llmgather batches OUT [--cancel]`: the batches a run's journal names, as their provider sees them now."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmgather.batch.api import BatchApi, BatchState, BatchStatus
from llmgather.batch.apis import make_batch_api
from llmgather.batch.journal import Journal, Part, journal_path
from llmgather.config import ModelConfig
from llmgather.errors import InputError, RequestError


@dataclass(slots=True)
class Listed:
    part: Part
    status: BatchStatus | None
    problem: str | None = None
    """Why its state could not be read (or the cancel failed)."""


def read_journal(output: Path, *, for_writing: bool = False) -> Journal:
    path = journal_path(output)
    journal = Journal.open(path, fresh=False) if for_writing and path.exists() else Journal.peek(path)
    if journal is None:
        raise InputError(
            f"no batch journal beside it ({journal_path(output).name}): was it a --batch run?", source=str(output)
        )
    return journal


async def list_batches(journal: Journal, *, api_key_env: str | None, cancel: bool = False) -> list[Listed]:
    """Every submitted part's batch and its state; with `cancel`, each one still live is cancelled first, and
    journaled as given up (a journal opened for writing: `Journal.open`)."""
    apis: dict[tuple[str, str | None], BatchApi] = {}
    listed = []
    try:
        for part in sorted(journal.parts.values(), key=lambda p: p.number):
            if part.batch_id is None:
                listed.append(Listed(part, None, "never submitted" if part.ended else "submitted? not journaled yet"))
                continue
            key = (part.model, part.api_base)
            if key not in apis:
                config = ModelConfig.build(part.model, api_base=part.api_base, api_key_env=api_key_env)
                config.check_key()
                apis[key] = make_batch_api(part.model, api_base=part.api_base, api_key=config.api_key)
            entry = await _one(apis[key], part, cancel=cancel)
            ended = entry.status is not None and entry.status.state is BatchState.ENDED
            if cancel and part.live and (entry.problem is None or ended):
                journal.cancelled(part)
            listed.append(entry)
    finally:
        await asyncio.gather(*(api.aclose() for api in apis.values()), return_exceptions=True)
    return listed


async def _one(api: BatchApi, part: Part, *, cancel: bool) -> Listed:
    assert part.batch_id is not None
    problem = None
    try:
        if cancel and part.live:
            try:
                await api.cancel(part.batch_id)
            except RequestError as error:
                problem = f"not cancelled: {error.message}"
        return Listed(part, await api.status(part.batch_id), problem)
    except RequestError as error:
        return Listed(part, None, f"{error.type_name}: {error.message}")


def listing_lines(listed: Sequence[Listed]) -> list[str]:
    lines = [f"{'part':>5}  {'model':<28} {'batch':<36} {'state':<24} {'done':>13}  failed"]
    for entry in listed:
        part, status = entry.part, entry.status
        if status is None:
            state, done, failed = "-", "-", "-"
        else:
            state = status.state.value + (f" ({status.ended_as.value})" if status.ended_as is not None else "")
            done, failed = f"{status.done}/{status.total}", str(status.failed)
        lines.append(f"{part.number:>5}  {part.model:<28} {part.batch_id or '-':<36} {state:<24} {done:>13}  {failed}")
        if entry.problem:
            lines.append(f"       {entry.problem}")
    return lines
