"""The Python API over the one run path (`llmgather.runner.Run`): `Client` for many tasks sharing one set of
limits, and `gather`/`run` for batches. Keywords are checked by the same boundary as the command line's flags
(`llmgather.config`), so a bad value raises the same `InputError` with the same message."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Any

from llmgather import eventloop
from llmgather.backends import Backend
from llmgather.budget import Budget
from llmgather.cache import ResponseCache
from llmgather.cache_redis import RedisCache
from llmgather.config import MODEL_KEYWORDS, RUN_KEYWORDS, ModelConfig, RunConfig
from llmgather.engine import Engine, EngineStats
from llmgather.errors import InputError, RequestError
from llmgather.io import OutputFile, read_results
from llmgather.io.reader import request_of, requests_from
from llmgather.runner import Run, opened_cache, reach_shared, refuse_changed_input, refuse_live_batches
from llmgather.types import Message, Request, Result

Prompt = str | dict[str, Any] | Request
CacheOption = str | os.PathLike[str] | ResponseCache | RedisCache | None


def run_config(
    model: str | ModelConfig | Sequence[str | ModelConfig],
    fallbacks: Sequence[str | ModelConfig] = (),
    cache: CacheOption = None,
    **keywords: Any,
) -> tuple[RunConfig, ResponseCache | RedisCache | None]:
    """The run that `model=`, `fallbacks=` and the other keywords describe, checked as flags are, and the
    cache object the caller shares, if `cache=` is one rather than a path. A model given as a `ModelConfig`
    keeps its own endpoint, key and limits; a name takes the keywords'."""
    unknown = sorted(set(keywords) - MODEL_KEYWORDS - RUN_KEYWORDS)
    if unknown:
        known = ", ".join(sorted({*MODEL_KEYWORDS, *RUN_KEYWORDS, "cache", "fallbacks", "backend"}))
        raise InputError(f"unknown keyword {unknown[0]}= (known: {known})")
    settings = {k: keywords.pop(k) for k in list(keywords) if k in MODEL_KEYWORDS}
    shared = cache if isinstance(cache, ResponseCache | RedisCache) else None

    def config(m: str | ModelConfig) -> ModelConfig:
        return m if isinstance(m, ModelConfig) else ModelConfig.build(m, **settings)

    if isinstance(model, str | ModelConfig):
        models: list[str | ModelConfig] = [model]
    elif isinstance(model, Sequence) and model:
        models = list(model)
    else:
        raise InputError(f"model= takes a model name or a list of them, got {model!r}")
    run = RunConfig.build(
        [config(m) for m in models],
        fallbacks=[config(m) for m in fallbacks],
        cache=None if isinstance(cache, ResponseCache | RedisCache) else cache,
        **keywords,
    )
    return run, shared


class Client:
    """One long-lived engine that many tasks (agents) call at once, under one set of limits.

    async with llmgather.Client(model="openai/gpt-5-mini", rpm=500) as client:
        reply = await client.complete("What is the capital of India?")
    """

    def __init__(
        self,
        model: str,
        *,
        backend: Backend | None = None,
        cache: CacheOption = None,
        budget: Budget | None = None,
        **options: Any,
    ) -> None:
        self.config, self._shared_cache = run_config(model, cache=cache, **options)
        if self.config.batch is not None:
            raise InputError("a Client answers each call as it comes: batch= goes with llmgather.run or gather")
        self._backends = {model: backend} if backend is not None else None
        self._budget = budget  # shared by every Client given the same one
        self._run: Run | None = None
        self._opened = contextlib.AsyncExitStack()
        self._ids = itertools.count()

    async def __aenter__(self) -> Client:
        async with contextlib.AsyncExitStack() as opening:
            cache = opening.enter_context(opened_cache(self.config, self._shared_cache))
            run = Run(self.config, cache=cache, budget=self._budget, backends=self._backends)
            self._run = await opening.enter_async_context(run)
            self._opened = opening.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._run = None
        await self._opened.aclose()

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("use the Client inside `async with llmgather.Client(...) as client:`")
        return self._run

    @property
    def engine(self) -> Engine:
        engine = self.run.engines[0]
        assert isinstance(engine, Engine), "a Client is online: it takes no batch options"
        return engine

    async def complete(self, prompt: str | list[Message] | Request, **params: Any) -> Result:
        """One request. Returns its Result; raises the request's error (an llmgather.Error) if it fails."""
        if isinstance(prompt, Request):
            request = prompt
        else:
            record = {"prompt": prompt} if isinstance(prompt, str) else {"messages": prompt}
            request = request_of({**record, **params}, next(self._ids), "complete()")
        result = await self.engine.complete(request)
        if result.error is not None:
            raise (
                RequestError(result.error.message, status=result.error.status)
                if result.exception is None
                else result.exception
            )
        return result

    def map(self, prompts: Iterable[Prompt] | AsyncIterable[Prompt]) -> AsyncGenerator[Result, None]:
        """Every Result, failures included, as each completes; raises RunStopped at the end if the run had to
        stop (bad key, quota, budget). Close it (`contextlib.aclosing`) if you stop early."""
        return self.run.stream(self._requests(prompts))

    async def _requests(self, prompts: Iterable[Prompt] | AsyncIterable[Prompt]) -> AsyncIterator[Request]:
        """Each prompt as a checked Request; errors name its place in `prompts` (ids come from the client)."""
        position = itertools.count()
        if isinstance(prompts, AsyncIterable):
            async for prompt in prompts:
                yield request_of(prompt, next(self._ids), f"item {next(position)}")
        else:
            for prompt in prompts:
                yield request_of(prompt, next(self._ids), f"item {next(position)}")

    def stats(self) -> EngineStats:
        return self.engine.stats()


async def gather(
    prompts: Iterable[Prompt],
    *,
    model: str | ModelConfig | Sequence[str | ModelConfig],
    backend: Backend | None = None,
    **options: Any,
) -> list[Result]:
    """Run every prompt; return one Result per prompt, in input order, failures included.

    `model=[A, B, ...]` sends every prompt to every model, each under its own limits, and returns one
    Result per prompt and model: prompt by prompt, in the models' order. `fallbacks=[C, ...]` sends a request
    that failed for good to the next of these models. A model given as `ModelConfig.build(name, api_base=...)`
    keeps its own endpoint, key and limits.
    With `output`, each result is also appended to that JSONL file as it arrives, and `resume=True` sends
    only what an earlier run left unanswered there (and, with `retry_failed=True`, what it failed).
    Raises RunStopped if the run had to stop (bad key, exhausted quota, budget), once every model is done.
    """
    if isinstance(prompts, str | bytes):
        raise InputError("prompts= takes a list of prompts: a single string would be sent a character at a time")
    config, shared_cache = run_config(model, **options)
    requests = requests_from(prompts)
    names = [c.model for c in config.models]
    slot = {(r.id, m): i * len(names) + j for i, r in enumerate(requests) for j, m in enumerate(names)}
    results: list[Result | None] = [None] * len(slot)
    backends = dict.fromkeys(names, backend) if backend is not None else None
    config.check_keys(served=backends or ())  # before the output is opened: --overwrite would empty it
    refuse_live_batches(config)
    await reach_shared(config)
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(opened_cache(config, shared_cache))  # before the output: see opened_cache
        output = done = None
        if config.output is not None:
            output = stack.enter_context(
                OutputFile.open(
                    config.output,
                    resume=config.resume,
                    retry_failed=config.retry_failed,
                    overwrite=config.overwrite,
                    guard={"cache": cache.path if isinstance(cache, ResponseCache) else None},
                    check=lambda earlier: refuse_changed_input(requests, config, earlier),
                )
            )
            done = output.state
            for earlier in read_results(config.output):
                if (earlier.id, earlier.model) in slot:
                    results[slot[earlier.id, earlier.model]] = earlier

        def keep(result: Result) -> None:
            results[slot[result.id, result.model]] = result
            if output is not None:
                output.write(result)

        async with Run(config, cache=cache, backends=backends) as run:
            outcome = await run.drive(requests, keep, done)
    if outcome.stopped:
        raise outcome.stopped[0]
    return [result for result in results if result is not None]


def run(
    prompts: Iterable[Prompt], *, model: str | ModelConfig | Sequence[str | ModelConfig], **options: Any
) -> list[Result]:
    """Blocking `gather`: for scripts. Inside a running event loop, use `await llmgather.gather(...)`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return eventloop.run(gather(prompts, model=model, **options))
    raise InputError(
        "llmgather.run() blocks, so it cannot run inside an event loop that is already running "
        "(async code, Jupyter): use `await llmgather.gather(...)` there"
    )
