"""The admission queue for one endpoint and model: who goes next, in arrival order, woken by one timer.

A request goes when every budget (requests, tokens in and out together, tokens in, tokens out: see `pace`) and
the shared cool-down allow it. The budgets pace at the user's limits, or at what the provider's headers
announce, or, when neither is known, at what its 429s teach: what the answers teach is `learning`'s; the queue
applies it.

A fresh run ramps up: its budgets open at half their rate, holding nothing saved up, and reach the whole of
it over its first half second, so that a run never opens with a burst of a whole second's limit in its first
instant (a token bucket at the provider refuses such a burst even when the minute's count allows it). The ramp
costs an eighth of a second of the limit, under 1% of any run long enough for its limits to matter. It is no
answer to Anthropic's "acceleration limits", which refuse an organisation's usage rising sharply over longer
spans than a run's first second: their 429s are met like any other (a shared cool-down, a step down).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from llmgather.limits.headers import Kind
from llmgather.limits.learning import Learner
from llmgather.limits.pace import ARRIVAL_SLACK_S, BURST_S, HEADROOM, Booking, Cost, Pace
from llmgather.limits.shared_state import SharedStats
from llmgather.limits.window import SlidingWindow

__all__ = [
    "ARRIVAL_SLACK_S",
    "BURST_S",
    "HEADROOM",
    "Cost",
    "DeadlinePassed",
    "Limiter",
    "LimiterStats",
    "Limits",
    "Ticket",
    "TooLarge",
]

# The ramp of a fresh run: the share of the rate it opens at, and how long it takes to reach the whole rate.
RAMP_START = 0.5
RAMP_S = 0.5
RAMP_STEP_S = 0.02


@dataclass(slots=True)
class Ticket:
    """One admitted request, kept to settle its bookings once the provider has answered."""

    cost: Cost
    bookings: list[Booking] = field(default_factory=list)
    shared: bool = False
    """Granted by a shared store (see `shared`), not by this process's own budgets."""


@dataclass(slots=True, eq=False)
class _Waiter:
    cost: Cost
    admitted: asyncio.Future[Ticket]
    reestimate: Callable[[], Cost] | None = None
    deadline: float = math.inf


class DeadlinePassed(Exception):
    """The request's deadline passed, or would have, before it could be admitted."""


class TooLarge(Exception):
    """The request alone is more than a whole minute of a limit allows: no pace would ever let it through."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How hard one model may be driven. None means no limit of that kind."""

    concurrency: int = 50
    rpm: float | None = None
    tpm: float | None = None
    """Input and output tokens together, as OpenAI counts them."""
    input_tpm: float | None = None
    output_tpm: float | None = None
    """Input and output tokens apart, as Anthropic counts them."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        limits = (("rpm", self.rpm), ("tpm", self.tpm), ("input_tpm", self.input_tpm), ("output_tpm", self.output_tpm))
        for name, value in limits:
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True)
class LimiterStats:
    rpm_limit: float | None
    """The ceiling: the user's limit or the provider's announced one, whichever is lower."""
    tpm_limit: float | None
    rpm_pace: float | None
    """What requests are paced at now, per minute (under the ceiling after a 429)."""
    tpm_pace: float | None
    waiting: int
    cool_downs: int
    cooling_for_s: float
    input_tpm_limit: float | None = None
    """Input and output tokens apart, as Anthropic counts them: the ceilings and the paces, per minute."""
    output_tpm_limit: float | None = None
    input_tpm_pace: float | None = None
    output_tpm_pace: float | None = None
    shared: SharedStats | None = None
    """The pace this process shares with others through a store (`--shared`), if it does."""


class Limiter:
    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        input_tpm: float | None = None,
        output_tpm: float | None = None,
        learn: bool = True,
        ramp: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        told = {Kind.REQUESTS: rpm, Kind.TOKENS: tpm, Kind.INPUT: input_tpm, Kind.OUTPUT: output_tpm}
        self._learner = learner = Learner(told, learn=learn, clock=clock, wall=wall)
        self._paces = tuple(Pace(kind, learner.rates[kind], clock) for kind in Kind)
        self._active: tuple[Pace, ...] = ()
        """The budgets with a rate (the others count nothing)."""
        self._tokens_paced = False
        self._share = 1.0
        self._ramp_from: float | None = None if ramp else -math.inf
        """When the first request went: the ramp's start."""
        self._ramp_next = math.inf
        """When the ramp next moves the rates (never once it is over, or before the first request)."""
        self._apply_rates()
        self._queue: deque[_Waiter] = deque()
        self._deadlines: list[tuple[float, int, _Waiter]] = []
        """A heap of the waiters' deadlines: the one waker also fails those whose deadline passes."""
        self._waiters_seen = 0
        self._waker: asyncio.Task[None] | None = None

    @property
    def counts_tokens(self) -> bool:
        """Whether requests must say their token estimate: when a token budget is in force, or may still be
        learned from the first answer (what went before it is counted once it is)."""
        learner = self._learner
        return self._tokens_paced or (learner.learn and learner.awaiting_first_answer)

    @property
    def awaiting_first_answer(self) -> bool:
        return self._learner.awaiting_first_answer

    def admit_now(self, cost: Cost) -> Ticket | None:
        """A ticket at once if nobody waits and the budgets allow; None means `await admit(cost)`."""
        if not self._queue and self._delay(cost) == 0.0:
            return self._take(cost)
        return None

    async def known(self) -> None:
        """Wait, if no limits were given, until the first answer has said what they are."""
        if self._learner.awaiting_first_answer:
            await self._learner.first_answer()

    def too_large(self, cost: Cost) -> str | None:
        """Why no pace would ever admit this request (it alone exceeds a whole minute of a limit), or None."""
        for pace in self._active:
            ceiling = pace.rate.ceiling
            if pace.kind is not Kind.REQUESTS and ceiling is not None and cost.of(pace.kind) > ceiling:
                return (
                    f"it needs {cost.of(pace.kind):,} {pace.kind.label} tokens, more than the {ceiling:,.0f} a minute"
                    " the limit allows: it can never be admitted (lower its max_tokens, or shorten it)"
                )
        return None

    async def admit(
        self, cost: Cost, reestimate: Callable[[], Cost] | None = None, deadline: float = math.inf
    ) -> Ticket:
        """Wait until one request of about `cost` tokens may be sent. Waiters are admitted in arrival order.

        Call `known()` first and count `cost` after it: whether tokens are budgeted may be learned there.
        `reestimate` counts it again when it reaches the head of the queue: answers that came meanwhile may have
        taught the estimate (at the start of a run, every waiter was counted before any answer had come).
        Raises `DeadlinePassed` once `deadline` (on this limiter's clock) passes while it waits: a cool-down of
        hours, or a pace too slow for it, never holds a request past its deadline.
        Hand the ticket (its `cost` is what was taken) to `settle` once the attempt is over.
        """
        ticket = self.admit_now(cost)
        if ticket is not None:
            return ticket
        admitted: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        entry = _Waiter(cost, admitted, reestimate, deadline)
        self._queue.append(entry)
        if deadline < math.inf:
            self._waiters_seen += 1
            heapq.heappush(self._deadlines, (deadline, self._waiters_seen, entry))
        self._wake()
        try:
            return await admitted
        except BaseException:
            if admitted.done() and not admitted.cancelled() and admitted.exception() is None:
                self.settle(admitted.result(), None)  # admitted and cancelled at once: it was never sent
            self._forget(entry)
            raise

    def _take(self, cost: Cost) -> Ticket:
        ticket = Ticket(cost, [pace.take(cost.of(pace.kind)) for pace in self._active])
        self._learner.note_sent(cost)
        if self._ramp_from is None:
            self._ramp_from = self._ramp_next = self._clock()
        return ticket

    def _delay(self, cost: Cost) -> float:
        now = self._clock()
        delay = self._learner.resume_at - now
        if now >= self._ramp_next:
            self._apply_rates()  # the ramp moves with the clock
        for pace in self._active:
            delay = max(delay, pace.delay(cost.of(pace.kind)))
        return max(0.0, delay)

    def _admit_ready(self) -> None:
        """Let in every waiter at the head of the queue that the budgets now allow."""
        queue = self._queue
        while queue:
            head = queue[0]
            if head.admitted.done():
                queue.popleft()
                continue
            if head.reestimate is not None:
                head.cost = head.reestimate()
            if self._delay(head.cost) > 0.0:
                return
            queue.popleft()
            head.admitted.set_result(self._take(head.cost))
            self._drop_settled_deadlines()
        # Everyone waiting is in: a waker asleep until its timer would outlive the run.
        self._deadlines.clear()
        waker, self._waker = self._waker, None
        if waker is not None and waker is not asyncio.current_task():
            waker.cancel()

    def _wake(self) -> None:
        """Make sure one waker runs while anyone waits; it sleeps exactly until the head may go."""
        self._admit_ready()
        if self._queue and (self._waker is None or self._waker.done()):
            self._waker = asyncio.get_running_loop().create_task(self._run_waker())

    async def _run_waker(self) -> None:
        while self._queue:
            delay = self._delay(self._queue[0].cost)
            if self._ramp_next < math.inf:
                delay = min(delay, RAMP_STEP_S)  # the rate grows while it sleeps: look again soon
            if self._deadlines:
                delay = min(delay, max(0.0, self._deadlines[0][0] - self._clock()))
            await self._sleep(delay)
            self._fail_overdue()
            self._admit_ready()

    def _drop_settled_deadlines(self) -> None:
        """Forget the deadlines of waiters already let in: they leave in about the order they came, so the heap's
        top is nearly always one of them, and the heap stays about as long as the queue."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][2].admitted.done():
            heapq.heappop(deadlines)

    def _fail_overdue(self) -> None:
        deadlines, now = self._deadlines, self._clock()
        while deadlines and deadlines[0][0] <= now:
            waiter = heapq.heappop(deadlines)[2]
            if not waiter.admitted.done():
                waiter.admitted.set_exception(DeadlinePassed())
        if not self._queue:
            deadlines.clear()

    def _forget(self, entry: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(entry)
        if not self._queue and self._waker is not None:
            self._waker.cancel()  # nobody left to wake: leave no task behind
            self._waker = None

    def observe(self, headers: Mapping[str, str], *, ok: bool) -> None:
        """An attempt ended: learn what its answer's headers announce; a clean answer lets the rate grow."""
        rates = self._learner.rates
        before = [rate.rate for rate in rates]
        for kind, seen in self._learner.answered(headers, ok=ok).items():
            self._paces[kind].heard(seen)
        if [rate.rate for rate in rates] != before:
            self._apply_rates()
        if self._queue:
            self._wake()

    def on_rate_limited(
        self, retry_after: float | None, headers: Mapping[str, str] | None = None, *, shared: bool = False
    ) -> None:
        """A 429: hold every request until Retry-After passes, and step the rates down (unless it is the
        request's own: see `learning`; `shared`: the provider named a quota, so it is not)."""
        if self._learner.refused(retry_after, headers, shared=shared):
            self._apply_rates()

    def sending(self, ticket: Ticket) -> None:
        """The admitted request goes on the wire now. Admission may have been a few milliseconds before
        (the event loop was busy); counting from now keeps that delay out of the arrival slack."""
        for booking in ticket.bookings:
            window = booking.pace.window
            if booking.entry is not None and window is not None:
                window.touch(booking.entry)

    def settle(self, ticket: Ticket, counted: Cost | None, *, rate_limited: bool = False) -> None:
        """Correct the bookings once the provider has answered: `counted` is what it counted, None if it did not
        count the request (refused it, or it was never sent). An answer that counted no tokens still counts as a
        request.

        A request refused with a 429 keeps its place in the request pace: given back, it would go again at once
        and, when others spend the same limit, be refused again, over and over."""
        for booking in ticket.bookings:
            pace = booking.pace
            amount = None if counted is None else counted.of(pace.kind)
            pace.settle(booking, amount, keep_pace=rate_limited and pace.kind is Kind.REQUESTS)
        if self._queue:
            self._wake()

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this endpoint and model until `seconds` from now (one shared wait)."""
        self._learner.cool_down(seconds)

    def stats(self) -> LimiterStats:
        rates = self._learner.rates
        return LimiterStats(
            rpm_limit=rates[Kind.REQUESTS].ceiling,
            tpm_limit=rates[Kind.TOKENS].ceiling,
            rpm_pace=rates[Kind.REQUESTS].rate,
            tpm_pace=rates[Kind.TOKENS].rate,
            waiting=len(self._queue),
            cool_downs=self._learner.cool_downs,
            cooling_for_s=max(0.0, self._learner.resume_at - self._clock()),
            input_tpm_limit=rates[Kind.INPUT].ceiling,
            output_tpm_limit=rates[Kind.OUTPUT].ceiling,
            input_tpm_pace=rates[Kind.INPUT].rate,
            output_tpm_pace=rates[Kind.OUTPUT].rate,
        )

    def start_alone(self, at: float) -> None:
        """Admit nothing before `at` (on this limiter's clock), and then from empty buckets: until now others paced
        this limiter's requests (see `shared`), and what they booked for it runs until then."""
        self._learner.resume_at = max(self._learner.resume_at, at)
        ahead_s = max(0.0, at - self._clock())
        for pace in self._active:
            pace.taken = True  # or the first request would go at once, and a window's worth with it
            bucket = pace.bucket
            if bucket is not None:  # empty at `at`: what it would save up by then is already spent
                bucket.charge(max(0.0, bucket.level()) + bucket.rate_per_s * ahead_s)

    def set_share(self, share: float) -> None:
        """Pace at this share of every rate: others spend the same limit (see `shared`)."""
        if share != self._share:
            self._share = share
            self._apply_rates()

    def _apply_rates(self) -> None:
        ramp = RAMP_START  # until the first request goes
        if self._ramp_from is not None:
            now = self._clock()
            ramp = min(1.0, RAMP_START + (1.0 - RAMP_START) * (now - self._ramp_from) / RAMP_S)
            self._ramp_next = now + RAMP_STEP_S if ramp < 1.0 else math.inf
        for pace in self._paces:
            pace.retune(ramp, self._seed, self._share)
        self._active = tuple(pace for pace in self._paces if pace.rate.rate is not None)
        self._tokens_paced = any(pace.kind is not Kind.REQUESTS for pace in self._active)

    def _seed(self, kind: Kind, window: SlidingWindow) -> None:
        """A one-second log for a rate just learned, holding what went in the last second before it was known.

        Those went in a burst, opening connections, and may have reached the provider well after they were
        let go; now, when an answer has come, is no earlier than nearly all of them arrived.
        """
        now = self._clock()
        recent = sum(cost.of(kind) for at, cost in self._learner.sent if at > now - window.span_s)
        if recent:
            window.add(recent)
