"""One admission: a concurrency slot, the breaker's leave (as the probe, when it is open), the budget's hold and
the limiter's ticket, taken in `enter` and given back in `settle`, however the attempt ends.

Every wait is bounded by the request's deadline. While the breaker is open, a request fails at once when the
next probe would come too late for it, or when the endpoint has failed everything for a whole deadline
already: then a dead endpoint ends a run of any length in about the deadline, not a deadline per slot-full.
The awaits are skipped when there is nothing to wait for: each costs a little on every request.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from llmgather.budget import Budget, to_units
from llmgather.errors import ConnectError, RateLimitError, RequestError, RequestTimeout, ServerError, names_a_quota
from llmgather.limits.breaker import CircuitBreaker
from llmgather.limits.pace import Cost
from llmgather.limits.queue import DeadlinePassed, Limiter, Ticket, TooLarge
from llmgather.limits.tokens import TokenEstimator
from llmgather.types import Request, Response, Usage

T = TypeVar("T")
NO_TOKENS = Cost()
CostFn = Callable[[Usage], float | None]


class BudgetSpent(Exception):
    """The run's budget cannot cover this request: nothing more goes."""


@dataclass(slots=True)
class Admission:
    """What one attempt took on its way to being sent, to give back however it ends."""

    probe: bool = False
    attempt: int = 0
    """Its number from the breaker: the order in which attempts were let through."""
    held: int = 0
    """Nano-dollars of the budget held until the answer comes."""
    cost: Cost = NO_TOKENS
    ticket: Ticket | None = None


class Gate:
    def __init__(
        self,
        concurrency: int,
        limiter: Limiter,
        breaker: CircuitBreaker,
        estimator: TokenEstimator,
        *,
        budget: Budget | None = None,
        cost: CostFn | None = None,
        deadline_s: float | None = None,
        cache_reads_count: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`cache_reads_count`: whether the provider counts prompt-cache reads against its input limit
        (Anthropic does not, on most models)."""
        self.limiter = limiter
        self._cache_reads_count = cache_reads_count
        self.breaker = breaker
        self.estimator = estimator
        self.budget = budget
        self._cost = cost if budget is not None and budget.max_cost_usd is not None else None
        self._deadline_s = math.inf if deadline_s is None else deadline_s
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)

    async def enter(self, request: Request, deadline: float) -> Admission:
        """Take a slot, then wait for the breaker, the budget and the limiter, each no later than `deadline`.
        Raises `DeadlinePassed`, `BudgetSpent` or `TooLarge` (no limit would ever admit it); what was taken is
        given back if this fails or is cancelled.

        The wait for a slot has no timer: those holding the slots are bounded by their own deadlines, and the
        caller checks the deadline again before sending."""
        await self._slots.acquire()
        limiter, breaker, budget = self.limiter, self.breaker, self.budget
        admission = Admission()
        try:
            if breaker.is_open:
                if breaker.reopens_at >= deadline or self._given_up(breaker):
                    raise DeadlinePassed
                admission.probe = await self._before(deadline, breaker.admit())
            if budget is not None:
                admission.held = await self._hold(budget, request, deadline)
            if limiter.awaiting_first_answer:
                await self._before(deadline, limiter.known())
            admission.cost = cost = self._estimate(request) if limiter.counts_tokens else NO_TOKENS
            # No timer per request on the limiter's own wait: a timer per waiting request shifts the loop's
            # wake-ups enough to break the one-second window's millisecond pacing (1-5 429s a run where there
            # was 1). The limiter's one waker fails waiters whose deadline passes.
            too_large = limiter.too_large(cost)
            if too_large is not None:
                raise TooLarge(too_large)
            ticket = limiter.admit_now(cost)
            if ticket is None:
                reestimate = (lambda: self._estimate(request)) if limiter.counts_tokens else None
                ticket = await limiter.admit(cost, reestimate, deadline)
            admission.ticket, admission.cost = ticket, ticket.cost
            admission.attempt = breaker.number()
        except BaseException:
            breaker.abandon(probe=admission.probe)
            if budget is not None:
                budget.release(admission.held)
            self._slots.release()
            raise
        return admission

    def sending(self, admission: Admission) -> None:
        """The admitted attempt goes on the wire now."""
        assert admission.ticket is not None
        self.limiter.sending(admission.ticket)

    def settle(
        self, admission: Admission, request: Request, response: Response | None, error: RequestError | None
    ) -> None:
        """The attempt is over: answered (`response`), failed (`error`), or never sent or cut off (neither).
        Every admitted attempt reports back, cancelled ones too: the first one may be the probe."""
        limiter, ticket = self.limiter, admission.ticket
        assert ticket is not None
        self._slots.release()
        if self.budget is not None:
            self.budget.release(admission.held)  # what it cost is charged as the answer is taken
        if response is not None:
            limiter.observe(response.headers, ok=True)
            self.breaker.record(outage=None, probe=admission.probe, attempt=admission.attempt)
            counted = self._counted(request, response, admission.cost)
            limiter.settle(ticket, counted)
            if response.usage is not None:
                self.estimator.observe(request, response.usage, counted.input)
            return
        if error is None:
            limiter.observe({}, ok=False)
            limiter.settle(ticket, None)
            self.breaker.abandon(probe=admission.probe)
            return
        rate_limited = isinstance(error, RateLimitError)
        if rate_limited:
            limiter.on_rate_limited(error.retry_after, error.headers, shared=names_a_quota(error.code))
        limiter.observe(error.headers, ok=False)
        # Accepted and then failed (mid-stream), it was counted: as estimated, since no usage came.
        limiter.settle(ticket, admission.cost if error.counted else None, rate_limited=rate_limited)
        outage = error if isinstance(error, ServerError | ConnectError | RequestTimeout) else None
        self.breaker.record(outage=outage, probe=admission.probe, attempt=admission.attempt)

    def _estimate(self, request: Request) -> Cost:
        """Its prompt as the provider will count it, and its completion reserved at its budget (or the typical
        completion). Estimated from what answers counted, so that cache reads a provider leaves out of its input
        limit are left out before the request goes, not only once it is answered: a correction that comes after
        the one-second window has moved on is too late for it."""
        estimator = self.estimator
        return Cost(estimator.counted_prompt_tokens(request), estimator.expected_completion(request))

    def _counted(self, request: Request, response: Response, estimate: Cost) -> Cost:
        """The tokens the provider counts against its limits, from the answer's usage: the prompt (less cache
        reads where they are not counted), the completion used, and its budget held against the combined limit."""
        usage = response.usage
        if usage is None:
            return estimate
        prompt = usage.prompt_tokens if self._cache_reads_count else usage.prompt_tokens - usage.cache_read_tokens
        return Cost(max(0, prompt), usage.completion_tokens, request.completion_budget() or 0)

    def _given_up(self, breaker: CircuitBreaker) -> bool:
        """Down for a whole deadline: fail what comes, but for the probe when one is due."""
        return self._clock() - breaker.open_since >= self._deadline_s and not breaker.probe_due

    async def _before(self, deadline: float, waiting: Awaitable[T]) -> T:
        """`waiting`'s result, or `DeadlinePassed` if it comes no sooner than `deadline`."""
        if deadline == math.inf:
            return await waiting
        try:
            async with asyncio.timeout(deadline - self._clock()):
                return await waiting
        except TimeoutError:
            raise DeadlinePassed from None

    async def _hold(self, budget: Budget, request: Request, deadline: float) -> int:
        """Count the request against the budget and hold its estimated cost (in nano-dollars)."""
        held = to_units(self._estimated_cost(request))
        certain = self._prompt_cost(request)
        taken = budget.try_take_units(held, to_units(certain))
        if taken is None:  # it may fit once what is in flight settles
            units = await self._before(deadline, budget.take(lambda: self._estimated_cost(request), certain))
            taken, held = units is not None, units or 0
        if not taken:
            raise BudgetSpent
        return held

    def _estimated_cost(self, request: Request) -> float:
        if self._cost is None:
            return 0.0
        return self._cost(self.estimator.expected_usage(request)) or 0.0

    def _prompt_cost(self, request: Request) -> float:
        """The part of the cost that is sure: the prompt is paid for whatever the answer."""
        if self._cost is None:
            return 0.0
        return self._cost(Usage(self.estimator.prompt_tokens(request), 0)) or 0.0
