"""The Python API: `Client` for many tasks sharing one set of limits, and `gather`/`run` for batches."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from llmgather import eventloop
from llmgather.backends import Backend, make_backend, uses_native_backend
from llmgather.budget import Budget
from llmgather.cache import ResponseCache
from llmgather.engine import Engine, EngineStats, ResultCache
from llmgather.errors import InputError, RequestError
from llmgather.io import ResultWriter, ResumeState, open_output, read_results
from llmgather.io.reader import request_from_record, requests_from
from llmgather.limits import Limits
from llmgather.pricing import Prices, cost_function, price_of
from llmgather.retry import RetryPolicy
from llmgather.types import Message, Request, Result

Prompt = str | dict[str, Any] | Request
DEFAULT_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Everything needed to drive one model at one endpoint."""

    model: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    prices: Mapping[str, Prices] = field(default_factory=dict)
    """Prices the user gave (USD per million tokens), by model; they win over any table."""
    api_key_env: str | None = None
    """The variable the user named for the key, if any."""

    @classmethod
    def build(
        cls,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 50,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        deadline: float | None = 600.0,
        prices: Mapping[str, Prices] | None = None,
    ) -> ModelConfig:
        if api_key is None:
            env = api_key_env or (DEFAULT_KEY_ENV if uses_native_backend(model, api_base) else None)
            api_key = (os.environ.get(env) or None) if env else None  # set but empty is unset
        return cls(
            model=model,
            api_base=api_base,
            api_key=api_key,
            limits=Limits(concurrency=concurrency, rpm=rpm, tpm=tpm),
            timeout_s=timeout,
            retry=RetryPolicy(max_retries=max_retries, deadline_s=deadline),
            prices=dict(prices or {}),
            api_key_env=api_key_env,
        )

    def price(self) -> Prices | None:
        """USD per million prompt and completion tokens, if known. At the user's own endpoint only their
        prices and the bundled table count: LiteLLM's map prices the provider's endpoints."""
        return price_of(self.model, self.prices, provider_endpoint=self.api_base is None)

    def missing_key(self) -> str | None:
        """Why no request could authenticate, found before any is sent; None when one may.

        A local server (any `api_base`) often needs no key, and LiteLLM's providers read their own."""
        if self.api_key is not None:
            return None
        if self.api_key_env is not None:
            return f"{self.api_key_env} is not set"
        if self.api_base is None and uses_native_backend(self.model, None):
            return f"{DEFAULT_KEY_ENV} is not set"
        return None

    def engine(
        self,
        backend: Backend | None = None,
        *,
        cache: ResultCache | None = None,
        budget: Budget | None = None,
        fallbacks: Sequence[Engine] = (),
    ) -> Engine:
        missing = self.missing_key() if backend is None else None
        if missing is not None:
            raise ValueError(f"no API key for {self.model}: {missing} (or give api_key=)")
        backend = backend or make_backend(
            self.model, api_base=self.api_base, api_key=self.api_key, max_connections=self.limits.concurrency
        )
        cost = cost_function(self.price())
        if cost is None and budget is not None and budget.max_cost_usd is not None:
            raise ValueError(
                f"max_cost needs the price of {self.model}, which no price table knows:"
                f" give it as prices={{{self.model!r}: (usd_per_mtok_in, usd_per_mtok_out)}}"
            )
        return Engine(
            backend,
            model=self.model,
            limits=self.limits,
            retry=self.retry,
            timeout_s=self.timeout_s,
            cost=cost,
            cache=cache,
            budget=budget,
            fallbacks=fallbacks,
        )


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
        cache_nondeterministic: bool = False,
        max_cost: float | None = None,
        max_requests: int | None = None,
        budget: Budget | None = None,
        **options: Any,
    ) -> None:
        self.config = ModelConfig.build(model, **options)
        self._backend = backend
        self._cache_option = cache
        self._cache_nondeterministic = cache_nondeterministic
        self._cache: ResponseCache | None = None
        if budget is None and (max_cost is not None or max_requests is not None):
            budget = Budget(max_cost, max_requests)
        self._budget = budget  # shared by every Client given the same one
        self._engine: Engine | None = None
        self._ids = itertools.count()

    async def __aenter__(self) -> Client:
        cache = self._cache_option
        if cache is not None and not isinstance(cache, ResponseCache):
            cache = self._cache = ResponseCache(cache, nondeterministic=self._cache_nondeterministic)
        self._engine = self.config.engine(self._backend, cache=cache, budget=self._budget)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.backend.aclose()
            self._engine = None
        if self._cache is not None:  # only the one it opened itself
            self._cache.close()
            self._cache = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("use the Client inside `async with llmgather.Client(...) as client:`")
        return self._engine

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
        """Every Result, failures included, as each completes. Close it (`contextlib.aclosing`) if you stop early."""
        return self.engine.results(self._requests(prompts))

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
    model: str | Sequence[str],
    output: str | os.PathLike[str] | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> list[Result]:
    """Run every prompt; return one Result per prompt, in input order, failures included.

    `model=[A, B, ...]` sends every prompt to every model, each under its own limits, and returns one
    Result per prompt and model: prompt by prompt, in the models' order.
    With `output`, each result is also appended to that JSONL file as it arrives, and `resume=True` sends
    only what an earlier run left unanswered there (and, with `retry_failed=True`, what it failed).
    Raises RunStopped if the run had to stop (bad key, exhausted quota, budget), once every model is done.
    """
    models = [model] if isinstance(model, str) else list(model)
    requests = requests_from(prompts)
    slot = {(r.id, m): i * len(models) + j for i, r in enumerate(requests) for j, m in enumerate(models)}
    results: list[Result | None] = [None] * len(slot)
    writer = None
    done = ResumeState()
    if output is not None:
        path = Path(output)
        done = open_output(path, resume=resume, retry_failed=retry_failed, overwrite=overwrite)
        for earlier in read_results(path):
            if (earlier.id, earlier.model) in slot:
                results[slot[earlier.id, earlier.model]] = earlier
        writer = ResultWriter(path, append=True)
    if len(models) > 1 and ("max_cost" in options or "max_requests" in options):
        options["budget"] = Budget(options.pop("max_cost", None), options.pop("max_requests", None))

    async def one_model(name: str) -> None:
        async with Client(name, **options) as client:
            async for result in client.map(r for r in requests if not done.skips(r.id, name)):
                results[slot[result.id, name]] = result
                if writer is not None:
                    writer.write(result)

    try:
        outcomes = await asyncio.gather(*(one_model(name) for name in models), return_exceptions=True)
    finally:
        if writer is not None:
            writer.close()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [result for result in results if result is not None]


def run(prompts: Iterable[Prompt], *, model: str | Sequence[str], **options: Any) -> list[Result]:
    """Blocking `gather`: for scripts. Inside a running event loop, use `await llmgather.gather(...)`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return eventloop.run(gather(prompts, model=model, **options))
    raise InputError(
        "llmgather.run() blocks, so it cannot run inside an event loop that is already running "
        "(async code, Jupyter): use `await llmgather.gather(...)` there"
    )
