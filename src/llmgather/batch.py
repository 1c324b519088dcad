"""A file-to-file run: every request to every model, each result written as it arrives.

This sits between the engine (which knows no files) and the command line (which knows no asyncio):
it wires input, engines, the cache, the budget, the writer, the progress view and the signals together.

A first SIGINT or SIGTERM stops admitting and lets what is in flight finish for `grace_s`; then, or at a
second signal, the rest is cancelled. Results are written whole, one line each, so a stop tears nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from llmgather.budget import Budget
from llmgather.client import ModelConfig
from llmgather.engine import Engine, EngineStats, ResultCache
from llmgather.errors import RunStopped
from llmgather.io.resume import ResumeState
from llmgather.io.writer import ResultWriter
from llmgather.progress import Progress
from llmgather.types import Request

INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    stats: list[EngineStats]
    wall_s: float
    stopped: list[RunStopped]
    interrupted: bool
    failed: int
    """Error results written (a request a fallback answered is not one)."""


@dataclass(slots=True)
class BatchOptions:
    resume: ResumeState = field(default_factory=ResumeState)
    fallbacks: list[ModelConfig] = field(default_factory=list)
    cache: ResultCache | None = None
    budget: Budget | None = None
    grace_s: float = 10.0
    total: int = 0
    progress_mode: str = "quiet"
    on_stopping: Callable[[str], None] = lambda message: None
    """Told, at a first signal, what is happening: the progress view may be gone by then."""


async def run_batch(
    source: Iterable[Request], configs: list[ModelConfig], writer: ResultWriter, options: BatchOptions, stream: IO[str]
) -> BatchOutcome:
    """Run each model over its own pass of the input, all at once; one writer takes every result."""
    started = time.monotonic()
    fallbacks = [config.engine(cache=options.cache, budget=options.budget) for config in options.fallbacks]
    engines = [config.engine(cache=options.cache, budget=options.budget, fallbacks=fallbacks) for config in configs]
    everyone = [*engines, *fallbacks]
    stopped: list[RunStopped] = []
    failed = 0

    async def drain(engine: Engine) -> None:
        nonlocal failed
        try:
            results = engine.results(_not_done(source, engine.model, options.resume))
            try:
                async for result in results:
                    writer.write(result)
                    failed += not result.ok
            finally:
                await results.aclose()
        except RunStopped as stop:
            if engine.stop_reason != INTERRUPTED:  # a signal is reported as such, not as a stop
                stopped.append(stop)

    interrupted = False
    try:
        async with Progress(
            lambda: [e.stats() for e in everyone],
            options.total,
            mode=options.progress_mode,
            stream=stream,
            fallbacks=frozenset(e.model for e in fallbacks),
        ):
            drains = [asyncio.create_task(drain(engine)) for engine in engines]
            with _Signals(engines, drains, options) as signals:
                await asyncio.gather(*drains, return_exceptions=True)
                for task in drains:
                    if not task.cancelled() and (error := task.exception()) is not None:
                        raise error
                interrupted = signals.received > 0
    finally:
        await asyncio.gather(*(e.backend.aclose() for e in everyone), return_exceptions=True)
    return BatchOutcome([e.stats() for e in everyone], time.monotonic() - started, stopped, interrupted, failed)


def _not_done(source: Iterable[Request], model: str, resume: ResumeState) -> Iterator[Request]:
    if not resume.done:
        yield from source
        return
    for request in source:
        if not resume.skips(request.id, model):
            yield request


class _Signals:
    """SIGINT and SIGTERM while the run lasts: the first stops it gently; a second, or the grace ending, at once."""

    def __init__(self, engines: list[Engine], drains: list[asyncio.Task[None]], options: BatchOptions) -> None:
        self._engines = engines
        self._drains = drains
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._grace: asyncio.TimerHandle | None = None
        self.received = 0

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(sig)
        if self._grace is not None:
            self._grace.cancel()

    def _on_signal(self) -> None:
        self.received += 1
        if self.received > 1:
            self._options.on_stopping("stopping now")
            self._cancel()
            return
        in_flight = sum(engine.stats().in_flight for engine in self._engines)
        for engine in self._engines:
            engine.stop(INTERRUPTED)
        self._options.on_stopping(
            f"stopping: letting {in_flight} requests in flight finish (up to {self._options.grace_s:g} s); "
            "press Ctrl-C again to stop at once"
        )
        self._grace = self._loop.call_later(self._options.grace_s, self._cancel)

    def _cancel(self) -> None:
        for task in self._drains:
            task.cancel()
