"""The one run path: models x requests -> engines -> one sink. The command line, `llmgather.run`, `gather` and
`Client` all go through `Run`, so that fan-out, fallbacks, resume, the cache, the budget and stopping behave
the same whichever way a run was started.

    async with Run(config) as run:                      # engines for every model and fallback, one cache, one budget
        outcome = await run.drive(requests, sink, skip)  # every request to every model; each result to `sink`

`Run` knows nothing of terminals or files: the caller renders `run.stats()` and owns the output. A sink that
raises `OutputError` (a full disk) stops the run; an input that fails mid-way stops it too; both come back in
`Outcome.stopped`, resumable, never as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from llmgather.backends import Backend, make_backend
from llmgather.batch.apis import make_batch_api
from llmgather.batch.journal import SUFFIX, Journal, journal_path
from llmgather.batch.lane import BatchLane
from llmgather.budget import Budget
from llmgather.cache import ResponseCache, open_cache
from llmgather.cache_redis import RedisCache
from llmgather.config import ModelConfig, RunConfig
from llmgather.engine import Engine, EngineStats, ResultCache, StopReason
from llmgather.errors import InputError, OutputError, RunStopped
from llmgather.io.reader import InputChanged
from llmgather.io.resume import ResumeState
from llmgather.limits.shared import SharedLimiter, SharedLink
from llmgather.limits.shared_redis import RedisStore
from llmgather.limits.shared_state import Misconfigured, QuotaId, SharedStore, Unreachable
from llmgather.pricing import batch_prices, cost_function
from llmgather.types import Request, Result

Source = Iterable[Request] | AsyncIterable[Request]
Lane = Engine | BatchLane
"""How one model's requests go: online, or through its provider's batch API."""
_DONE = object()


@dataclass(frozen=True, slots=True)
class Outcome:
    stats: list[EngineStats]
    wall_s: float
    stopped: list[RunStopped]
    """Why the run ended early (a fatal answer, the budget, the output, the input), one per cause."""
    interrupted: bool
    failed: int
    """Error results written (a request a fallback answered is not one)."""
    written: int
    cut_off: int
    """Requests in flight when the run was cut short (a second signal, the grace ended): not written."""
    live_batches: int = 0
    """Batches left live at the provider (`--detach`, a signal, a stop): a resume collects them."""
    unconfirmed_batches: int = 0
    """Parts whose submission was cut short before the provider named their batch: a resume asks it first."""


class Run:
    """Engines for every model and fallback of a `RunConfig`, sharing one cache and one budget."""

    def __init__(
        self,
        config: RunConfig,
        *,
        cache: ResultCache | None = None,
        budget: Budget | None = None,
        backends: Mapping[str, Backend] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._on_warning = on_warning
        self._links: dict[int, SharedLink] = {}
        """The run's link to each shared store (`--shared`), by the store's place in `config.shared`."""
        self._cache = cache
        self.budget = budget if budget is not None else _budget(config)
        self._backends = dict(backends or {})
        self.engines: list[Lane] = []
        self.fallbacks: list[Engine] = []
        self.journal: Journal | None = None
        self.stopped: list[RunStopped] = []
        self._drains: set[asyncio.Task[None]] = set()
        self.cut_off = 0

    async def __aenter__(self) -> Run:
        try:
            await self._link_shared()
            self.fallbacks = [self._engine(c) for c in self.config.fallbacks]
            if self.config.batch is None:
                self.engines = [self._engine(c, self.fallbacks) for c in self.config.models]
            else:
                self.engines = [self._batch_lane(c) for c in self.config.models]
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        everyone, self.engines, self.fallbacks = self.everyone, [], []
        await asyncio.gather(*(e.aclose() for e in everyone), return_exceptions=True)
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(link.aclose() for link in links), return_exceptions=True)
        if self.journal is not None:
            self.journal.close()

    def _engine(self, config: ModelConfig, fallbacks: Sequence[Engine] = ()) -> Engine:
        backend = self._backends.get(config.model)
        if backend is None:
            config.check_key()
            backend = make_backend(
                config.model,
                api_base=config.api_base,
                api_key=config.api_key,
                max_connections=config.limits.concurrency,
            )
        return Engine(
            backend,
            model=config.model,
            limits=config.limits,
            limiter=self._shared_limiter(config, backend.endpoint),
            retry=config.retry,
            timeout_s=config.timeout_s,
            cost=cost_function(config.price()),
            cache=self._cache,
            budget=self.budget,
            fallbacks=fallbacks,
            cache_reads_count=config.cache_reads_count,
            default_max_tokens=config.default_max_tokens,
        )

    def _batch_lane(self, config: ModelConfig) -> BatchLane:
        """The model's batch lane, and the online engine that `--by` spills to."""
        batch, output = self.config.batch, self.config.output
        assert batch is not None and output is not None, "RunConfig.check_batch() guarantees both"
        if self.journal is None:
            self.journal = Journal.open(journal_path(output), fresh=not self.config.resume)
        online = self._engine(config)
        config.check_key()
        api = make_batch_api(config.model, api_base=config.api_base, api_key=config.api_key)
        prices = config.price()
        return BatchLane(
            api,
            self.journal,
            online,
            options=batch,
            retry=config.retry,
            cost=cost_function(batch_prices(config.model, prices)),
            online_cost=cost_function(prices),
            cache=self._cache,
            budget=self.budget,
            api_base=config.api_base,
        )

    async def _link_shared(self) -> None:
        for index, where in enumerate(self.config.shared):
            link = self._links[index] = SharedLink(_store(where), on_warning=self._on_warning)
            try:
                await link.start(optional=self.config.shared_optional)
            except Unreachable as exc:
                raise _unreachable(exc) from None

    def _shared_limiter(self, config: ModelConfig, endpoint: str) -> SharedLimiter | None:
        """The model's limiter when its pace is shared with other processes; None for one of its own."""
        if config.shared is None:
            return None
        limits = config.limits
        return SharedLimiter(
            self._links[self.config.shared.index(config.shared)],
            QuotaId(endpoint, config.model, QuotaId.account_of(config.api_key)),
            limits.rpm,
            limits.tpm,
            input_tpm=limits.input_tpm,
            output_tpm=limits.output_tpm,
        )

    @property
    def everyone(self) -> list[Lane]:
        return [*self.engines, *self.fallbacks]

    def stats(self) -> list[EngineStats]:
        return [engine.stats() for engine in self.everyone]

    # -- running ---------------------------------------------------------------------------------

    async def stream(self, source: Source, skip: ResumeState | None = None) -> AsyncGenerator[Result, None]:
        """Every request of `source` (less what `skip` holds) to every model, each result as it completes.

        The models run at once, each over its own pass of the source (an async source serves one model
        only). What stops a model (a fatal answer, the budget, the input failing) is kept in `stopped`, and the
        first such stop is raised once every model is done; `cancel()` ends the stream at once.
        """
        if isinstance(source, AsyncIterable) and len(self.engines) > 1:
            raise InputError("an async source of requests can be read once, so it serves one model only")
        queue: asyncio.Queue[object] = asyncio.Queue()
        # Results waiting for the consumer are bounded: with no room the engines wait, and so does their input.
        room = asyncio.Semaphore(sum(engine.limits.concurrency for engine in self.engines))
        drains = [asyncio.create_task(self._drain(e, source, skip, queue, room)) for e in self.engines]
        self._drains.update(drains)  # several streams may run at once (agents sharing a Client)
        stops_before = len(self.stopped)
        remaining = len(drains)
        try:
            while remaining:
                item = await queue.get()
                if item is _DONE:
                    remaining -= 1
                    continue
                room.release()
                assert isinstance(item, Result)
                yield item
        finally:
            for task in drains:
                task.cancel()
            outcomes = await asyncio.gather(*drains, return_exceptions=True)
            self._drains.difference_update(drains)
        failed = next((o for o in outcomes if isinstance(o, Exception)), None)
        if failed is not None:
            raise failed
        if len(self.stopped) > stops_before:
            raise self.stopped[stops_before]

    async def _drain(
        self,
        engine: Lane,
        source: Source,
        skip: ResumeState | None,
        queue: asyncio.Queue[object],
        room: asyncio.Semaphore,
    ) -> None:
        try:
            results = engine.results(_not_done(source, engine.model, skip))
            try:
                async for result in results:
                    await room.acquire()
                    queue.put_nowait(result)
            finally:
                await results.aclose()
        except RunStopped as stop:
            # A signal is reported as such, and a stop for the input or the output by whoever saw it first.
            if engine.stop_reason not in (StopReason.SIGNAL, StopReason.INPUT, StopReason.OUTPUT):
                self.stopped.append(stop)
        except InputChanged as error:  # edited under the run: stop every model alike, resumably
            if not any(isinstance(stop.cause, InputChanged) for stop in self.stopped):  # each model reads it
                self.stopped.append(RunStopped(str(error), cause=error))
            self.stop(StopReason.INPUT)
        except Exception:  # the caller's own source failed (a bad item, a bug): stop every model, and say so
            self.stop(StopReason.INPUT)
            raise
        finally:
            queue.put_nowait(_DONE)

    async def drive(
        self, source: Iterable[Request], sink: Callable[[Result], None], skip: ResumeState | None = None
    ) -> Outcome:
        """Run `source` through every model, handing each result to `sink` (which writes it) at once."""
        started = time.monotonic()
        failed = written = 0
        stream = self.stream(source, skip)
        try:
            async for result in stream:
                try:
                    sink(result)
                except OutputError as error:
                    self.stop(StopReason.OUTPUT)
                    self.stopped.append(error)
                    self.cut_off += sum(engine.stats().in_flight for engine in self.everyone)
                    break
                written += 1
                failed += not result.ok
        except RunStopped:
            pass  # kept in `stopped`, for the outcome
        finally:
            await stream.aclose()
        interrupted = any(engine.stop_reason == StopReason.SIGNAL for engine in self.everyone)
        wall_s = time.monotonic() - started
        live = self.journal.live_parts() if self.journal is not None else []
        named = sum(part.batch_id is not None for part in live)
        return Outcome(
            self.stats(),
            wall_s,
            list(self.stopped),
            interrupted,
            failed,
            written,
            self.cut_off,
            named,
            len(live) - named,
        )

    def stop(self, reason: StopReason) -> None:
        """Admit nothing more; what is in flight finishes."""
        for engine in self.everyone:
            engine.stop(reason)

    def cancel(self) -> int:
        """End the run at once; returns how many requests in flight were cut off (a resume sends them)."""
        in_flight = sum(engine.stats().in_flight for engine in self.everyone)
        self.cut_off += in_flight
        for task in self._drains:
            task.cancel()
        return in_flight


def refuse_live_batches(config: RunConfig) -> None:
    """Starting afresh, or going on online, would forget batches of an earlier run still running at the
    provider (paid for) and send their requests a second time: refused (InputError) before the output is
    touched. Only `--batch --resume` goes on with them; `--overwrite` may drop those cancelled with
    `llmgather batches OUT --cancel` (what they answered is given up with the output)."""
    if config.output is None or (config.batch is not None and config.resume):
        return
    path = journal_path(config.output)
    journal = Journal.peek(path)
    live = journal.live_parts() if journal is not None else []
    if config.overwrite:
        live = [part for part in live if not part.cancelled]
    if live:
        raise InputError(
            f"{len(live)} batches of an earlier --batch run are still live: collect them with --batch --resume"
            " (--by 1s sends the rest online at once), or cancel them with"
            f" `llmgather batches {path.name.removesuffix(SUFFIX)} --cancel` and start over with --overwrite",
            source=str(path),
        )


async def reach_shared(config: RunConfig) -> None:
    """Refuse, before the output is touched, a run whose shared store does not answer (unless
    `--shared-optional`: then the run paces alone until it does, and says so), or refuses it as its URL gives it
    (a password, a database: `Misconfigured`, refused even with `--shared-optional`)."""
    for where in config.shared:
        store = _store(where)
        try:
            await store.ping()
        except Unreachable as exc:
            if isinstance(exc, Misconfigured) or not config.shared_optional:
                raise _unreachable(exc) from None
        finally:
            if isinstance(where, str):
                await store.aclose()


def _store(where: str | SharedStore) -> SharedStore:
    """The store a `--shared` URL names (connected when first used), or the one given."""
    return RedisStore.connect(where) if isinstance(where, str) else where


def _unreachable(exc: Unreachable) -> InputError:
    if isinstance(exc, Misconfigured):
        return InputError(f"the shared pace refuses this run ({exc})")
    return InputError(
        f"the shared pace does not answer ({exc}): start it, or give --shared-optional (shared_optional=True)"
        " to pace alone until it does"
    )


def _budget(config: RunConfig) -> Budget | None:
    if config.max_cost is None and config.max_requests is None:
        return None
    return Budget(config.max_cost, config.max_requests)


@contextlib.contextmanager
def opened_cache(
    config: RunConfig,
    shared: ResponseCache | RedisCache | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Iterator[ResponseCache | RedisCache | None]:
    """The run's cache: `shared` if the caller gives one (left open), else `config.cache` opened here and
    closed after (its last answers are written then). Open it before the output: a cache refused at the
    start (not SQLite, a missing folder, a Redis that does not answer) must leave the output untouched."""
    if shared is not None or config.cache is None:
        yield shared
        return
    cache = open_cache(config.cache, deterministic_only=config.cache_deterministic_only, on_warning=on_warning)
    try:
        yield cache
    finally:
        cache.close()


def _not_done(source: Source, model: str, skip: ResumeState | None) -> Source:
    if skip is None or not skip.done or isinstance(source, AsyncIterable):
        return source
    return (request for request in source if not skip.skips(request.id, model))


def refuse_changed_input(source: Iterable[Request], config: RunConfig, state: ResumeState) -> None:
    """A resume refuses (InputError) an input whose ids now name other requests than the ones answered:
    otherwise old answers would be kept for prompts they do not answer."""
    if not state.done:
        return
    names = [c.model for c in config.models]
    for request in source:
        for model in names:
            if state.mismatch(request, model):
                raise InputError(state.mismatch_message(request, model))


class Signals:
    """SIGINT and SIGTERM while a run lasts: the first stops it gently (what is in flight finishes for the
    grace); a second, or the grace ending, cuts it off at once and says how many requests that cut."""

    def __init__(self, run: Run, grace_s: float, tell: Callable[[str], None]) -> None:
        self._run = run
        self._grace_s = grace_s
        self._tell = tell
        self._loop = asyncio.get_running_loop()
        self._grace: asyncio.TimerHandle | None = None
        self.received = 0

    def __enter__(self) -> Signals:
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
            self._cut_off("stopping now")
            return
        in_flight = sum(engine.stats().in_flight for engine in self._run.everyone)
        self._run.stop(StopReason.SIGNAL)
        self._tell(
            f"stopping: letting {in_flight} requests in flight finish (up to {self._grace_s:g} s); "
            "press Ctrl-C again to stop at once"
        )
        self._grace = self._loop.call_later(self._grace_s, self._cut_off, "the grace period is over")

    def _cut_off(self, why: str) -> None:
        cut = self._run.cancel()
        self._tell(f"{why}: {cut} requests in flight cut off, unwritten; a resume sends them again")
