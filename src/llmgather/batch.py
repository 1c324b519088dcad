"""A file-to-file run: every request to every model, each result written as it arrives.

This sits between the engine (which knows no files) and the command line (which knows no asyncio):
it wires input, engines, the writer and the progress view together for one run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from llmgather.client import ModelConfig
from llmgather.engine import Engine, EngineStats
from llmgather.errors import RunStopped
from llmgather.io.writer import ResultWriter
from llmgather.progress import Progress
from llmgather.types import Request


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    stats: list[EngineStats]
    wall_s: float
    stopped: list[RunStopped]

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.stats)


async def run_batch(
    per_model_inputs: list[Iterable[Request]],
    configs: list[ModelConfig],
    writer: ResultWriter,
    *,
    total: int,
    progress_mode: str,
    progress_stream: IO[str],
) -> BatchOutcome:
    """Run each model over its own pass of the input, all at once; one writer takes every result."""
    started = time.monotonic()
    engines = [config.engine() for config in configs]
    stopped: list[RunStopped] = []

    async def drain(engine: Engine, requests: Iterable[Request]) -> None:
        try:
            results = engine.results(requests)
            try:
                async for result in results:
                    writer.write(result)
            finally:
                await results.aclose()
        except RunStopped as stop:
            stopped.append(stop)

    try:
        async with (
            Progress(lambda: [e.stats() for e in engines], total, mode=progress_mode, stream=progress_stream),
            asyncio.TaskGroup() as tasks,
        ):
            for engine, requests in zip(engines, per_model_inputs, strict=True):
                tasks.create_task(drain(engine, requests))
    finally:
        await asyncio.gather(*(engine.backend.aclose() for engine in engines), return_exceptions=True)
    return BatchOutcome([e.stats() for e in engines], time.monotonic() - started, stopped)
