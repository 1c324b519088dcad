"""Ray Data: `complete(dataset, model=...)` answers a prompt column on a pool of Ray actors that share one pace.

Each worker (an actor) keeps one `llmgather.Client` on one event loop for its whole life, so its limiter, its
connections and what it learned carry from batch to batch, and the batches Ray hands it at once share its
`concurrency`. The workers pace together through one `SharedStore`: Redis when `shared=` names it, otherwise
a Ray actor that holds a `SharedState` (what Redis holds, by the same algorithm), so a Ray cluster needs
nothing else. That actor is anonymous and not detached: Ray ends it once the dataset holding its handle is
gone, and with the job at the latest.

Every row comes back, answered or not: a failed request, a missing prompt or a run that had to stop (a bad key)
is a row with `error` set, never a failed task.

Ray is imported only here, and only when called: `llmgather[ray]` installs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import time
from typing import Any, cast

from llmgather.client import Client, run_config
from llmgather.config import ModelConfig
from llmgather.errors import InputError
from llmgather.limits.shared_state import Ask, Grant, QuotaId, SharedState, Unreachable
from llmgather.runner import reach_shared
from llmgather.types import ErrorInfo, Request, Result

NOT_WITH_RAY = ("output", "resume", "retry_failed", "overwrite", "batch", "by", "batch_size", "detach")
"""`llmgather.run` keywords about a file of one process's results: here the dataset returned is the output."""
STORE_TIMEOUT_S = 1.0
"""A pace actor this slow is as good as gone: the workers pace alone until it answers (as with Redis)."""
CLOSE_TIMEOUT_S = 5.0
"""How long a worker that Ray Data lets go waits for its connections to close."""
USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens")


def complete(
    dataset: Any,
    *,
    model: str | ModelConfig,
    prompt_column: str = "prompt",
    workers: int = 4,
    rows_per_batch: int = 100,
    num_cpus: float = 0.25,
    **options: Any,
) -> Any:
    """`dataset` (a `ray.data.Dataset`) with the answer to each row's `prompt_column` added: `content`,
    `error` (null, or its type, status and message), `usage`, `cost_usd`, `attempts` and `latency_s`; input
    columns of those names are replaced. Lazy, as Ray Data is: the requests go when the dataset returned is
    consumed (written, iterated, materialized).

    `workers` actors send the requests, each with `concurrency` requests in flight and `num_cpus` of a CPU
    reserved (they mostly wait on the network), `rows_per_batch` rows handed to a worker at a time. A block of
    the dataset goes to one worker whole: split a dataset of few blocks (one Parquet file is one) with
    `dataset.repartition(n)` so that every worker gets rows. The other keywords are `llmgather.run`'s (`rpm`,
    `tpm`, `max_retries`, `cache`, `shared`, ...), checked here, at once; `max_cost` and `max_requests` hold for
    each worker. Without `shared=`, the pace is kept by a new Ray actor, which ends with the dataset returned.
    """
    import ray

    _check(model, prompt_column, workers, rows_per_batch, num_cpus, options)
    if options.get("shared") is None:
        options = {**options, "shared": RayStore.start()}
    return dataset.map_batches(
        _Worker,
        fn_constructor_kwargs={"model": model, "prompt_column": prompt_column, "options": options},
        batch_format="pyarrow",
        batch_size=rows_per_batch,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
    )


def _check(
    model: str | ModelConfig,
    prompt_column: str,
    workers: int,
    rows_per_batch: int,
    num_cpus: float,
    options: dict[str, Any],
) -> None:
    """Refuse here, with one InputError, what every worker would refuse."""
    if not isinstance(model, str | ModelConfig):
        raise InputError(f"model= takes one model here (a row gets one answer), got {model!r}")
    refused = sorted(set(options) & set(NOT_WITH_RAY))
    if refused:
        raise InputError(f"{refused[0]}= does not go with llmgather.ray.complete: the dataset it returns is the output")
    for name, value in (("workers", workers), ("rows_per_batch", rows_per_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name}= takes a whole number of at least 1, got {value!r}")
    if not isinstance(prompt_column, str):
        raise InputError(f"prompt_column= takes a column name, got {prompt_column!r}")
    if isinstance(num_cpus, bool) or not isinstance(num_cpus, int | float) or num_cpus < 0:
        raise InputError(f"num_cpus= takes a number of at least 0, got {num_cpus!r}")
    config, _ = run_config(model, **options)  # every other keyword, as llmgather.run checks it
    if config.shared:
        # As llmgather.run refuses a Redis that does not answer, before anything is sent. In a thread of its
        # own, since the caller may be in a running event loop (a notebook).
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, reach_shared(config)).result()


# -- the pace the workers share, when no Redis is given -------------------------------------------------------


class _PaceKeeper:
    """The actor behind `RayStore`: a `SharedState`. Its calls run one at a time, so each admission is atomic,
    as a Lua script is in Redis. Asks come with the time they were made, on the asker's clock: the workers of
    a host share one clock, and hosts keep theirs within milliseconds of each other (NTP)."""

    def __init__(self) -> None:
        self._state = SharedState()

    def admit(self, key: str, ask: Ask, now: float | None = None) -> Grant:
        return self._state.admit(key, ask, time.time() if now is None else now)

    def ping(self) -> bool:
        return True


class RayStore:
    """A `SharedStore` over a `_PaceKeeper` actor: what Redis is to `RedisStore`, for a Ray cluster."""

    where = "a Ray actor"

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    def start(cls) -> RayStore:
        """A new pace actor, from the driver. It takes no CPU, so it never waits for one to be free."""
        import ray

        actor: Any = ray.remote(num_cpus=0)(_PaceKeeper).remote()
        ray.get(actor.ping.remote())  # started before any worker asks it: a slow start is not an outage
        return cls(actor)

    async def admit(self, quota: QuotaId, ask: Ask) -> Grant:
        """The slot is counted from when the worker asked (on its clock: one clock per host) and its wait from
        when the answer came, so that neither the queue at the actor nor a busy loop moves it later. An answer
        that came after its slot has a negative wait: the limiter takes it as a late wake-up and asks again."""
        asked = time.time()
        grant = await self._call(self.actor.admit.remote(quota.key, ask, asked))
        assert isinstance(grant, Grant)
        if grant.admitted:
            grant.wait_s -= time.time() - asked
        return grant

    async def ping(self) -> None:
        await self._call(self.actor.ping.remote())

    async def aclose(self) -> None:
        """Nothing to close: the actor is the driver's, and outlives each worker's use of it."""

    async def _call(self, reference: Any) -> Any:
        from ray.exceptions import RayError

        try:
            return await asyncio.wait_for(reference, STORE_TIMEOUT_S)
        except (RayError, TimeoutError) as exc:
            raise Unreachable(f"{self.where}: {exc or type(exc).__name__}") from exc


# -- the workers ----------------------------------------------------------------------------------------------


class _Worker:
    """One Ray actor's share of the rows: its batches, on the one event loop Ray Data gives an async actor."""

    def __init__(self, model: str | ModelConfig, prompt_column: str, options: dict[str, Any]) -> None:
        self._model = model
        self._column = prompt_column
        self._options = options
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None
        self._ids = itertools.count()

    async def __call__(self, batch: Any) -> Any:
        prompts = batch.column(self._column).to_pylist() if self._column in batch.column_names else None
        outcomes: list[Result | ErrorInfo | None] = [
            _not_a_prompt(self._column, batch.column_names, prompts, row) for row in range(batch.num_rows)
        ]
        asked = {next(self._ids): row for row, outcome in enumerate(outcomes) if outcome is None}
        failure = ErrorInfo("RunStopped", None, "the worker's run ended with no answer for this row")
        try:
            client = await self._opened()
            assert prompts is not None  # a row is asked only when its prompt is a string
            requests = [Request.from_prompt(id, prompts[row]) for id, row in asked.items()]
            async with contextlib.aclosing(client.map(requests)) as answers:
                async for result in answers:
                    outcomes[asked.pop(int(result.id))] = result
        except Exception as exc:  # a stopped run (bad key, budget) or worse: the rows say so, the task goes on
            failure = ErrorInfo(type(exc).__name__, None, str(exc))
        for row in asked.values():
            outcomes[row] = failure
        return _with_answers(batch, [outcome or failure for outcome in outcomes])

    async def _opened(self) -> Client:
        """The worker's one Client, opened on Ray's event loop by the first batch (the others wait for it)."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is None:
                client = Client(cast(str, self._model), **self._options)  # a ModelConfig is taken too
                self._client = await client.__aenter__()
                self._loop = asyncio.get_running_loop()
        return self._client

    def __del__(self) -> None:
        """Ray Data drops a worker at the end (from another thread than its loop's): its connections close."""
        client, loop = self._client, self._loop
        if client is None or loop is None or not loop.is_running():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=CLOSE_TIMEOUT_S)


def _not_a_prompt(column: str, columns: list[str], prompts: list[Any] | None, row: int) -> ErrorInfo | None:
    """Why row `row` cannot be asked, or None when its prompt is a string."""
    if prompts is None:
        return ErrorInfo("InputError", None, f"no column {column!r} (columns: {', '.join(columns)})")
    prompt = prompts[row]
    if isinstance(prompt, str):
        return None
    what = "missing" if prompt is None else f"a {type(prompt).__name__}, not a string"
    return ErrorInfo("InputError", None, f"the prompt ({column!r}) is {what}")


def _with_answers(batch: Any, outcomes: list[Result | ErrorInfo]) -> Any:
    """`batch` (a pyarrow Table) with the answer columns, typed alike in every batch so that they concatenate."""
    import pyarrow as pa

    answers = [o if isinstance(o, Result) else None for o in outcomes]
    errors = [o.error if isinstance(o, Result) else o for o in outcomes]
    columns = {
        "content": pa.array([a.content if a else None for a in answers], pa.string()),
        "error": pa.array([e.to_dict() if e else None for e in errors], _error_type()),
        "usage": pa.array([_usage(a) for a in answers], _usage_type()),
        "cost_usd": pa.array([a.cost_usd if a else None for a in answers], pa.float64()),
        "attempts": pa.array([a.attempts if a else 0 for a in answers], pa.int64()),
        "latency_s": pa.array([a.latency_s if a else 0.0 for a in answers], pa.float64()),
    }
    kept = batch.drop_columns([name for name in columns if name in batch.column_names])
    for name, column in columns.items():
        kept = kept.append_column(name, column)
    return kept


def _usage(result: Result | None) -> dict[str, int] | None:
    usage = result.usage if result is not None else None
    return None if usage is None else {name: getattr(usage, name) for name in USAGE_FIELDS}


def _error_type() -> Any:
    import pyarrow as pa

    return pa.struct([("type", pa.string()), ("status", pa.int64()), ("message", pa.string())])


def _usage_type() -> Any:
    import pyarrow as pa

    return pa.struct([(name, pa.int64()) for name in USAGE_FIELDS])
