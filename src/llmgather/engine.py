"""The online lane: one model's requests through the gate and the backend, results out as they complete.

Admission (a concurrency slot, the circuit breaker, the budget, the rate limits) is `limits.gate`'s; the engine
sends, times each attempt, classifies what came back, retries or gives up, and stops when told or when an
answer says no request can succeed. It knows nothing of files or terminals: callers read `stats()` and consume
`results()`.

Every wait of a request ends by its deadline (`RetryPolicy.deadline_s`, counted from when it first waits to be
sent): for admission, for an answer, before a retry. A request that cannot be answered by then fails, saying
what went wrong and that time ran out; against a dead endpoint a run ends in about the deadline.

Memory is bounded by concurrency, not by the number of requests: at most `concurrency` attempts are on
the wire, and at most twice that many requests are alive at once (sending, waiting to retry, or
answered and not yet taken by the consumer). The input is pulled only as room frees up.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from llmgather.backends.base import Backend
from llmgather.backends.redact import redact
from llmgather.budget import Budget
from llmgather.errors import (
    FatalError,
    ModelNotFoundError,
    PermanentError,
    RateLimitError,
    RequestError,
    RequestTimeout,
    RunStopped,
    TransientError,
)
from llmgather.limits import Limiter, LimiterStats, Limits, TokenEstimator
from llmgather.limits.breaker import CircuitBreaker
from llmgather.limits.gate import BudgetSpent, CostFn, Gate
from llmgather.limits.queue import DeadlinePassed, TooLarge
from llmgather.limits.tokens import tiktoken_counter
from llmgather.retry import RetryPolicy
from llmgather.stats import LatencyHistogram
from llmgather.types import ErrorInfo, Request, Response, Result

if TYPE_CHECKING:
    from llmgather.batch.counts import BatchCounts  # only named: the engine never imports the batch lane

_DONE = object()
NOT_FOUND_IS_FATAL = 3
"""404s with no success yet that say the endpoint itself is wrong (a bad API base): the run stops."""


class StopReason(enum.StrEnum):
    """Why an engine stopped before the end of its requests."""

    SIGNAL = "interrupted"
    BUDGET = "budget"
    FATAL = "fatal"
    """An answer said no request can succeed (a refused key, a spent quota, no such model or endpoint)."""
    INPUT = "input"
    OUTPUT = "output"


class ResultCache(Protocol):
    """Answers kept from earlier runs (see `llmgather.cache`): a hit is a result without a request.

    `lookup` is awaited, so that a cache across the network (Redis) never holds up the loop; `put` only
    queues the answer. Neither raises: a cache in trouble misses and drops, and says so itself."""

    async def lookup(self, model: str, endpoint: str, request: Request) -> Result | None: ...

    def put(self, model: str, endpoint: str, request: Request, result: Result) -> None: ...


class _Halted(Exception):
    """A request reached the wire after the run began to stop: it is not sent."""


class _FailedAttempt(Exception):
    def __init__(self, error: RequestError, latency_s: float) -> None:
        self.error = error
        self.latency_s = latency_s


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of one engine's progress; the progress view and the summary only read these."""

    model: str
    endpoint: str
    elapsed_s: float
    dispatched: int
    succeeded: int
    """Answered, from the provider or the cache."""
    cached: int
    fell_back: int
    """Failed here and answered by a fallback model: counted in `succeeded` (and in the fallback's stats)."""
    failed: int
    in_flight: int
    retries: int
    rate_limited: int
    timeouts: int
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    """Of `prompt_tokens`, those read from the provider's prompt cache (billed at its cache-read rate)."""
    cache_write_tokens: int
    cost_usd: float
    errors_by_type: dict[str, int]
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_p99_s: float | None
    limiter: LimiterStats
    circuit_openings: int
    circuit_open: bool
    stopped_by: str | None
    """Why the run stopped early, for display: a fatal error's type, `budget`, `interrupted` (a signal),
    `an input error` or `an output error`."""
    batch: BatchCounts | None = None
    """A batch run's batches and how its requests went (None online)."""

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


@dataclass(slots=True)
class _Tally:
    dispatched: int = 0
    succeeded: int = 0
    cached: int = 0
    fell_back: int = 0
    failed: int = 0
    in_flight: int = 0
    retries: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


class Engine:
    def __init__(
        self,
        backend: Backend,
        *,
        model: str | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 120.0,
        cost: CostFn | None = None,
        limiter: Limiter | None = None,
        cache: ResultCache | None = None,
        budget: Budget | None = None,
        fallbacks: Sequence[Engine] = (),
        cache_reads_count: bool = True,
        default_max_tokens: int | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.backend = backend
        self.model = model or backend.model
        self.limits = limits or Limits()
        self._retry = retry or RetryPolicy()
        self._timeout_s = timeout_s
        self._cost = cost
        limits = self.limits
        self._limiter = limiter or Limiter(
            limits.rpm,
            limits.tpm,
            input_tpm=limits.input_tpm,
            output_tpm=limits.output_tpm,
            clock=clock,
            sleep=sleep,
        )
        self._breaker = CircuitBreaker(clock=clock, sleep=sleep)
        self._cache = cache
        self._budget = budget
        self._fallbacks = tuple(fallbacks)
        # `default_max_tokens`: what the backend sends for a request that sets none, which the provider reserves
        # against an output-token limit; so admission does too.
        self._estimator = TokenEstimator(tiktoken_counter(self.model), default_budget=default_max_tokens)
        self._gate = Gate(
            self.limits.concurrency,
            self._limiter,
            self._breaker,
            self._estimator,
            budget=budget,
            cost=cost,
            deadline_s=self._retry.deadline_s,
            cache_reads_count=cache_reads_count,
            clock=clock,
        )
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._live = asyncio.Semaphore(2 * self.limits.concurrency)
        self._tally = _Tally()
        self._started = clock()
        self._stopping = False
        # Tasks waiting to send (for a slot, admission, the breaker, the budget or a backoff): a stop ends
        # them at once instead of after the wait, since nothing of theirs is in flight.
        self._waiting: set[asyncio.Task[object]] = set()
        self._halting: set[asyncio.Task[object]] = set()
        self._answered = False  # any attempt succeeded: a 404 is then about its own request
        self._not_found = 0
        self.fatal: FatalError | None = None
        self.stop_reason: StopReason | None = None
        """Why the run stopped before the end; None while it has not."""

    # -- the two ways in -------------------------------------------------------------------------

    async def results(self, requests: Iterable[Request] | AsyncIterable[Request]) -> AsyncGenerator[Result, None]:
        """Yield one Result per request as each completes. Raises RunStopped after a fatal error.

        Requests cut short by a stop yield nothing, so that a resumed run sends them again.
        """
        queue: asyncio.Queue[object] = asyncio.Queue()
        dispatcher = asyncio.create_task(self._dispatch(requests, queue))
        try:
            while (item := await queue.get()) is not _DONE:
                self._live.release()
                assert isinstance(item, Result)
                yield item
            await dispatcher
        finally:
            if not dispatcher.done():
                dispatcher.cancel()
                await asyncio.gather(dispatcher, return_exceptions=True)
        if self.stop_reason is not None:
            raise self._stopped_error()

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def complete(self, request: Request) -> Result:
        """Run one request through the same admission, retries and limits. Raises RunStopped after a fatal error."""
        if self.fatal is not None:
            raise self._stopped_error()
        self._tally.dispatched += 1
        result = await self._answer(request)
        if result is None:
            raise self._stopped_error()
        return result

    def stop(self, reason: StopReason = StopReason.SIGNAL) -> None:
        """Admit nothing more; what is in flight finishes."""
        if self.stop_reason is None:
            self.stop_reason = StopReason(reason)
        self._stopping = True
        me = asyncio.current_task()
        for task in self._waiting - {me}:
            self._halting.add(task)
            task.cancel()
        self._waiting.clear()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # -- dispatch --------------------------------------------------------------------------------

    async def _dispatch(
        self, requests: Iterable[Request] | AsyncIterable[Request], queue: asyncio.Queue[object]
    ) -> None:
        input_error: Exception | None = None
        try:
            async with asyncio.TaskGroup() as tasks:
                try:
                    async for request in each_request(requests):
                        await self._live.acquire()
                        if self._stopping:
                            self._live.release()
                            break
                        self._tally.dispatched += 1
                        tasks.create_task(self._run_and_emit(request, queue))
                except Exception as exc:  # the input failed: finish what is in flight, then say so
                    input_error = exc
                    self.stop(StopReason.INPUT)
        finally:
            queue.put_nowait(_DONE)
        if input_error is not None:
            raise input_error

    async def _run_and_emit(self, request: Request, queue: asyncio.Queue[object]) -> None:
        result = await self._answer(request)
        if result is None:
            self._live.release()
        else:
            queue.put_nowait(result)

    # -- one request, all its attempts -----------------------------------------------------------

    async def _answer(self, request: Request) -> Result | None:
        """This model's answer, or, if it failed, the first fallback model's that succeeds."""
        result = await self._answer_here(request)
        if result is None or result.error is None:
            return result
        for fallback in self._fallbacks:
            try:
                other = await fallback.complete(request)
            except RunStopped:
                why = fallback.stop_reason
                if why is None or why is StopReason.FATAL:
                    continue  # that model cannot answer anything now (bad key, quota): try the next
                # Stopped for the budget or a signal: the fallback could still answer, so no line is written
                # and a resume sends the request again. The run stops alike: the budget is shared.
                self.stop(why)
                return None
            if other.ok:
                self._tally.succeeded += 1
                self._tally.fell_back += 1
                other.answered_by, other.model = other.model, self.model
                other.attempts += result.attempts
                return other
        # Counted only now that it is final: a failure a fallback answered is not one.
        self._tally.failed += 1
        self._tally.errors[result.error.type] += 1
        return result

    async def _answer_here(self, request: Request) -> Result | None:
        """From the cache if it holds the answer, else from the provider (and then kept in the cache)."""
        cache = self._cache
        if cache is None:
            return await self._run(request)
        hit = await cache.lookup(self.model, self.backend.endpoint, request)
        if hit is not None:
            self._tally.succeeded += 1
            self._tally.cached += 1
            hit.row = request.row
            hit.finished_at = time.time()
            hit.digest = request.digest()
            return hit
        result = await self._run(request)
        if result is not None and result.ok:
            cache.put(self.model, self.backend.endpoint, request, result)
        return result

    async def _run(self, request: Request) -> Result | None:
        """The request's attempts; None if the run stopped before it was answered (a resume sends it)."""
        try:
            return await self._attempts(request)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task not in self._halting:
                raise
            self._halting.discard(task)
            if task.uncancel() > 0:  # cancelled from elsewhere as well: that one stands
                raise
            return None

    async def _attempts(self, request: Request) -> Result | None:
        first_attempt_at = self._clock()
        deadline_s = self._retry.deadline_s
        # Every wait counts against the deadline, the first admission included: a request never waits
        # longer than it for a slot's turn at the breaker, the budget or the limiter, nor for an answer.
        deadline = math.inf if deadline_s is None else first_attempt_at + deadline_s
        failed_attempts = 0
        refused = 0  # of those, 429s
        latency_s = 0.0
        error: RequestError | None = None
        while not self._stopping:
            try:
                response, latency_s = await self._attempt(request, deadline)
            except _Halted:
                return None
            except DeadlinePassed:
                late = self._too_late(error, failed_attempts)
                return self._failure(request, late, failed_attempts, latency_s, refused)
            except TooLarge as exc:
                return self._failure(request, PermanentError(str(exc)), failed_attempts, latency_s, refused)
            except _FailedAttempt as failed:
                error, latency_s = failed.error, failed.latency_s
                failed_attempts += 1
                refused += isinstance(error, RateLimitError)
                if isinstance(error, PermanentError) and error.status == 404 and not self._answered:
                    error = self._not_found_yet(error)
                    if error is None:
                        self._tally.retries += 1
                        continue  # at once: too early to tell a wrong endpoint from one request's 404
                if isinstance(error, FatalError):
                    self._halt(error)
                    return None
                elapsed_s = self._clock() - first_attempt_at
                wait = self._retry.next_wait(error, failed_attempts, elapsed_s, self._rng, latency_s)
                if wait is None:
                    if isinstance(error, TransientError) and failed_attempts <= self._retry.max_retries:
                        error = self._too_late(error, failed_attempts)  # retries left, but no time
                    return self._failure(request, error, failed_attempts, latency_s, refused)
                self._tally.retries += 1
                task = self._wait_begins()
                try:
                    await self._sleep(wait)
                finally:
                    self._waiting.discard(task)
                continue
            return self._success(request, response, failed_attempts + 1, latency_s, refused)
        return None

    async def _attempt(self, request: Request, deadline: float) -> tuple[Response, float]:
        """One attempt, after admission. Returns the response and how long the provider took to give it."""
        waiting = self._wait_begins()
        try:
            admission = await self._gate.enter(request, deadline)
        except BudgetSpent:
            self.stop(StopReason.BUDGET)
            raise _Halted from None
        finally:
            self._waiting.discard(waiting)
        response: Response | None = None
        error: RequestError | None = None
        try:
            if self._stopping:  # stopped while this request waited for its slot: leave it for a resume
                raise _Halted
            sent_at = self._clock()
            if sent_at >= deadline:
                raise DeadlinePassed
            self._tally.in_flight += 1
            self._gate.sending(admission)
            timeout_s = min(self._timeout_s, deadline - sent_at)
            try:
                async with asyncio.timeout(timeout_s):
                    response = await self.backend.send(request)
            except Exception as exc:
                error = self._classify(exc, timeout_s)
                raise _FailedAttempt(error, self._clock() - sent_at) from exc
            finally:
                self._tally.in_flight -= 1
        finally:
            self._gate.settle(admission, request, response, error)
        assert response is not None
        return response, self._clock() - sent_at

    def _wait_begins(self) -> asyncio.Task[object]:
        """Mark the current task as waiting to send, so that a stop ends it; the caller unmarks it."""
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        self._waiting.add(task)
        return task

    def _not_found_yet(self, error: RequestError) -> FatalError | None:
        """A 404 before any success: None to try again, or, once it is the rule, the endpoint is wrong."""
        self._not_found += 1
        if self._not_found < NOT_FOUND_IS_FATAL:
            return None
        return ModelNotFoundError(
            f"{self.backend.endpoint} answered 404 Not Found to the first {self._not_found} attempts and none"
            f" succeeded: is the API base URL (or the model name {self.backend.model!r}) right?"
            f" It said: {error.message}",
            status=404,
            code=error.code,
        )

    def _too_late(self, error: RequestError | None, attempts: int) -> RequestError:
        """The error for a request whose deadline passed: why it was not answered, and that time ran out."""
        deadline_s = self._retry.deadline_s
        if error is None and self._breaker.is_open:
            error = self._breaker.last_outage
        if error is None:
            return RequestTimeout(f"not sent within the {deadline_s:g} s deadline (waiting for its turn)")
        if attempts:
            why = f"the {deadline_s:g} s deadline left no time for another attempt after {attempts}"
        else:
            failing_s = self._clock() - self._breaker.open_since
            why = f"not sent: every attempt has failed for {failing_s:.3g} s, and the deadline is {deadline_s:g} s"
        return type(error)(f"{error.message} ({why})", status=error.status, code=error.code)

    def _classify(self, exc: Exception, timeout_s: float) -> RequestError:
        if isinstance(exc, TimeoutError):
            self._tally.timeouts += 1
            return RequestTimeout(f"no answer within {timeout_s:.3g} s")
        if isinstance(exc, RateLimitError):
            self._tally.rate_limited += 1
            return exc
        if isinstance(exc, RequestError):
            return exc
        return RequestError(redact(f"{type(exc).__name__}: {exc}"))  # a backend's own error may quote anything

    # -- outcomes --------------------------------------------------------------------------------

    def _success(
        self, request: Request, response: Response, attempts: int, latency_s: float, rate_limited: int
    ) -> Result:
        tally = self._tally
        tally.succeeded += 1
        tally.latency.add(latency_s)
        self._answered = True
        usage = response.usage
        cost = None
        if usage is not None:
            tally.prompt_tokens += usage.prompt_tokens
            tally.completion_tokens += usage.completion_tokens
            tally.cache_read_tokens += usage.cache_read_tokens
            tally.cache_write_tokens += usage.cache_write_tokens
            if self._cost is not None:
                cost = self._cost(usage)
                if cost is not None:
                    tally.cost_usd += cost
                    self._charge(cost)
        elif self._cost is not None:
            # An answer that says nothing of its usage (a stream without include_usage) was paid for all the
            # same: the budget is charged what it was estimated to cost, or a budget would never stop a run.
            self._charge(self._cost(self._estimator.expected_usage(request)) or 0.0)
        return Result(
            id=request.id,
            model=self.model,
            content=response.content,
            usage=usage,
            latency_s=latency_s,
            attempts=attempts,
            cost_usd=cost,
            finish_reason=response.finish_reason,
            row=request.row,
            rate_limited=rate_limited,
            finished_at=time.time(),
            digest=request.digest(),
            ttft_s=response.ttft_s,
        )

    def _charge(self, cost: float) -> None:
        if self._budget is not None:
            self._budget.charge(cost)
            if self._budget.exhausted() is not None:
                self.stop(StopReason.BUDGET)

    def _failure(
        self, request: Request, error: RequestError, attempts: int, latency_s: float, rate_limited: int
    ) -> Result:
        return Result(
            id=request.id,
            model=self.model,
            latency_s=latency_s,
            attempts=attempts,
            error=ErrorInfo(type=error.type_name, status=error.status, message=error.message),
            exception=error,
            row=request.row,
            rate_limited=rate_limited,
            finished_at=time.time(),
            digest=request.digest(),
        )

    def _halt(self, error: FatalError) -> None:
        if self.fatal is None:
            self.fatal = error
            self._tally.errors[error.type_name] += 1
        self.stop(StopReason.FATAL)

    def _stopped_error(self) -> RunStopped:
        return stopped_error(f"{self.model} at {self.backend.endpoint}", self.stop_reason, self.fatal, self._budget)

    def stats(self) -> EngineStats:
        tally = self._tally
        return EngineStats(
            model=self.model,
            endpoint=self.backend.endpoint,
            elapsed_s=self._clock() - self._started,
            dispatched=tally.dispatched,
            succeeded=tally.succeeded,
            cached=tally.cached,
            fell_back=tally.fell_back,
            failed=tally.failed,
            in_flight=tally.in_flight,
            retries=tally.retries,
            rate_limited=tally.rate_limited,
            timeouts=tally.timeouts,
            prompt_tokens=tally.prompt_tokens,
            completion_tokens=tally.completion_tokens,
            cache_read_tokens=tally.cache_read_tokens,
            cache_write_tokens=tally.cache_write_tokens,
            cost_usd=tally.cost_usd,
            errors_by_type=dict(tally.errors),
            latency_p50_s=tally.latency.percentile(50),
            latency_p95_s=tally.latency.percentile(95),
            latency_p99_s=tally.latency.percentile(99),
            limiter=self._limiter.stats(),
            circuit_openings=self._breaker.openings,
            circuit_open=self._breaker.is_open,
            stopped_by=self._stopped_by(),
        )

    def _stopped_by(self) -> str | None:
        return stopped_by(self.stop_reason, self.fatal)


def stopped_error(where: str, reason: StopReason | None, fatal: FatalError | None, budget: Budget | None) -> RunStopped:
    """What a lane that stopped early raises: where, and why (the fatal answer, the budget, or the reason)."""
    if fatal is not None:
        why = f"{fatal.type_name}: {fatal.message}"
    elif reason is StopReason.BUDGET and budget is not None:
        why = budget.exhausted() or "the budget is spent"
    elif reason is not None:
        why = f"stopped ({stopped_by(reason, fatal)})"
    else:
        why = "stopped"
    return RunStopped(f"{where}: {why}", cause=fatal)


def stopped_by(reason: StopReason | None, fatal: FatalError | None) -> str | None:
    """Why a lane stopped, for display (`EngineStats.stopped_by`)."""
    if reason is StopReason.FATAL and fatal is not None:
        return fatal.type_name
    if reason is StopReason.INPUT or reason is StopReason.OUTPUT:
        return f"an {reason} error"
    return reason


async def each_request(requests: Iterable[Request] | AsyncIterable[Request]) -> AsyncIterator[Request]:
    if isinstance(requests, AsyncIterable):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request
