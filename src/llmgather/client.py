"""The Python API over the one run path (`llmgather.run.Run`): `Client` for many tasks sharing one set of
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
from llmgather.config import ModelConfig, RunConfig
from llmgather.engine import Engine, EngineStats
from llmgather.errors import InputError, RequestError
from llmgather.io import OutputFile, read_results
from llmgather.io.reader import request_from_record, requests_from
from llmgather.runner import Run, refuse_changed_input
from llmgather.types import Message, Request, Result

Prompt = str | dict[str, Any] | Request

_MODEL_KEYWORDS = frozenset(
    {"api_base", "api_key", "api_key_env", "concurrency", "rpm", "tpm", "timeout", "max_retries", "deadline", "prices"}
)


def run_config(
    model: str | ModelConfig | Sequence[str | ModelConfig], fallbacks: Sequence[str | ModelConfig] = (), **keywords: Any
) -> RunConfig:
    """The run that `model=`, `fallbacks=` and the other keywords describe, checked as flags are. A model
    given as a `ModelConfig` keeps its own endpoint, key and limits; a name takes the keywords'."""
    settings = {k: keywords.pop(k) for k in list(keywords) if k in _MODEL_KEYWORDS}

    def config(m: str | ModelConfig) -> ModelConfig:
        return m if isinstance(m, ModelConfig) else ModelConfig.build(m, **settings)

    models = [model] if isinstance(model, str | ModelConfig) else list(model)
    return RunConfig.build([config(m) for m in models], fallbacks=[config(m) for m in fallbacks], **keywords)


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
        cache: str | os.PathLike[str] | ResponseCache | None = None,
        budget: Budget | None = None,
        **options: Any,
    ) -> None:
        self.config = run_config(model, cache=None if isinstance(cache, ResponseCache) else cache, **options)
        self._backends = {model: backend} if backend is not None else None
        self._shared_cache = cache if isinstance(cache, ResponseCache) else None
        self._budget = budget  # shared by every Client given the same one
        self._run: Run | None = None
        self._ids = itertools.count()

    async def __aenter__(self) -> Client:
        run = Run(self.config, cache=self._shared_cache, budget=self._budget, backends=self._backends)
        self._run = await run.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._run is not None:
            await self._run.aclose()
            self._run = None

    @property
    def run(self) -> Run:
        if self._run is None:
            raise RuntimeError("use the Client inside `async with llmgather.Client(...) as client:`")
        return self._run

    @property
    def engine(self) -> Engine:
        return self.run.engines[0]

    async def complete(self, prompt: str | list[Message] | Request, **params: Any) -> Result:
        """One request. Returns its Result; raises the request's error (an llmgather.Error) if it fails."""
        if isinstance(prompt, Request):
            request = prompt
        elif isinstance(prompt, str):
            request = Request.from_prompt(next(self._ids), prompt, **params)
        else:
            request = Request(id=next(self._ids), messages=prompt, params=params)
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
        if isinstance(prompts, AsyncIterable):
            async for prompt in prompts:
                yield self._request(prompt)
        else:
            for prompt in prompts:
                yield self._request(prompt)

    def _request(self, prompt: Prompt) -> Request:
        if isinstance(prompt, Request):
            return prompt
        if isinstance(prompt, str):
            return Request.from_prompt(next(self._ids), prompt)
        return request_from_record(prompt, next(self._ids))

    def stats(self) -> EngineStats:
        return self.engine.stats()


async def gather(
    prompts: Iterable[Prompt],
    *,
    model: str | ModelConfig | Sequence[str | ModelConfig],
    backend: Backend | None = None,
    cache: str | os.PathLike[str] | ResponseCache | None = None,
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
    shared_cache = cache if isinstance(cache, ResponseCache) else None
    config = run_config(model, cache=None if shared_cache else cache, **options)
    requests = requests_from(prompts)
    names = [c.model for c in config.models]
    slot = {(r.id, m): i * len(names) + j for i, r in enumerate(requests) for j, m in enumerate(names)}
    results: list[Result | None] = [None] * len(slot)
    backends = dict.fromkeys(names, backend) if backend is not None else None
    with contextlib.ExitStack() as stack:
        output = done = None
        if config.output is not None:
            output = stack.enter_context(
                OutputFile.open(
                    config.output,
                    resume=config.resume,
                    retry_failed=config.retry_failed,
                    overwrite=config.overwrite,
                    guard={"cache": config.cache or (shared_cache.path if shared_cache else None)},
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

        async with Run(config, cache=shared_cache, backends=backends) as run:
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
