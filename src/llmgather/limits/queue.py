"""The admission queue for one endpoint and model: who goes next, in arrival order, woken by one timer.

A request goes when the request budget, the token budget, their one-second windows and the shared cool-down
all allow it. The budgets pace at the user's limits, or at what the provider's headers announce, or, when
neither is known, at what its 429s teach: what the answers teach is `learning`'s; the queue applies it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from llmgather.limits.adaptive import Aimd
from llmgather.limits.bucket import TokenBucket
from llmgather.limits.learning import Learner
from llmgather.limits.window import SlidingWindow, WindowEntry

# Requests arrive at the provider a little after we let them go, and not all equally late. The one-second
# window (see `window`) therefore remembers what went for this much longer than a second, so that nothing
# the provider still counts has left it; it may hold the whole per-second limit. Each millisecond of it
# costs 0.1% of the limit; at 200 requests in flight locally 10 ms was too little (0.5% refused), 15 enough.
ARRIVAL_SLACK_S = 0.015
# The bucket paces under the limit by as much, so that the window seldom has to hold anyone back.
HEADROOM = 1.0 / (1.0 + ARRIVAL_SLACK_S)
# The bucket keeps the pace over minutes and spreads requests out; the window keeps every second exact.
# So the bucket may save up a little, in seconds of rate, to use what a held-back second left over.
BURST_S = 0.25


@dataclass(slots=True)
class Ticket:
    """One admitted request, kept to settle its booking once the provider has answered."""

    tokens: int
    request_entry: WindowEntry | None = None
    token_entry: WindowEntry | None = None


@dataclass(slots=True, eq=False)
class _Waiter:
    tokens: int
    admitted: asyncio.Future[Ticket]


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


class Limiter:
    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        learn: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._learner = learner = Learner(rpm, tpm, learn=learn, clock=clock)
        self._request_rate: Aimd = learner.requests
        self._token_rate: Aimd = learner.tokens
        self._requests: TokenBucket | None = None
        self._tokens: TokenBucket | None = None
        self._request_window: SlidingWindow | None = None
        self._token_window: SlidingWindow | None = None
        self._apply_rates()
        self._queue: deque[_Waiter] = deque()
        self._waker: asyncio.Task[None] | None = None

    @property
    def counts_tokens(self) -> bool:
        """Whether requests must say their token estimate: when a token budget is in force, or may still be
        learned from the first answer (what went before it is counted once it is)."""
        learner = self._learner
        return self._tokens is not None or (learner.learn and learner.awaiting_first_answer)

    @property
    def awaiting_first_answer(self) -> bool:
        return self._learner.awaiting_first_answer

    def admit_now(self, tokens: int) -> Ticket | None:
        """A ticket at once if nobody waits and the budgets allow; None means `await admit(tokens)`."""
        if not self._queue and self._can_take(tokens):
            return self._take(tokens)
        return None

    async def known(self) -> None:
        """Wait, if no limits were given, until the first answer has said what they are."""
        if self._learner.awaiting_first_answer:
            await self._learner.first_answer()

    async def admit(self, tokens: int) -> Ticket:
        """Wait until one request of about `tokens` tokens may be sent. Waiters are admitted in arrival order.

        Call `known()` first and count `tokens` after it: whether tokens are budgeted may be learned there.
        Hand the ticket to `settle` once the attempt is over.
        """
        ticket = self.admit_now(tokens)
        if ticket is not None:
            return ticket
        admitted: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        entry = _Waiter(tokens, admitted)
        self._queue.append(entry)
        self._wake()
        try:
            return await admitted
        except BaseException:
            if admitted.done() and not admitted.cancelled():
                self.settle(admitted.result(), None)  # admitted and cancelled at once: it was never sent
            self._forget(entry)
            raise

    def _can_take(self, tokens: int) -> bool:
        return self._delay(tokens) == 0.0

    def _take(self, tokens: int) -> Ticket:
        ticket = Ticket(tokens)
        if self._requests is not None:
            self._requests.take(1)
        if self._tokens is not None:
            self._tokens.take(tokens)
        if self._request_window is not None:
            ticket.request_entry = self._request_window.add(1)
        if self._token_window is not None:
            ticket.token_entry = self._token_window.add(tokens)
        self._learner.note_sent(tokens)
        return ticket

    def _delay(self, tokens: int) -> float:
        delay = self._learner.resume_at - self._clock()
        if self._requests is not None:
            delay = max(delay, self._requests.wait_for(1))
        if self._tokens is not None:
            delay = max(delay, self._tokens.wait_for(tokens))
        if self._request_window is not None:
            delay = max(delay, self._request_window.wait_for(1))
        if self._token_window is not None:
            delay = max(delay, self._token_window.wait_for(tokens))
        return max(0.0, delay)

    def _admit_ready(self) -> None:
        """Let in every waiter at the head of the queue that the budgets now allow."""
        queue = self._queue
        while queue:
            head = queue[0]
            if head.admitted.done():
                queue.popleft()
                continue
            if not self._can_take(head.tokens):
                return
            queue.popleft()
            head.admitted.set_result(self._take(head.tokens))
        # Everyone waiting is in: a waker asleep until its timer would outlive the run.
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
            await self._sleep(self._delay(self._queue[0].tokens))
            self._admit_ready()

    def _forget(self, entry: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(entry)
        if not self._queue and self._waker is not None:
            self._waker.cancel()  # nobody left to wake: leave no task behind
            self._waker = None

    def observe(self, headers: Mapping[str, str], *, ok: bool) -> None:
        """An attempt ended: learn what its answer's headers announce; a clean answer lets the rate grow."""
        self._learner.answered(headers, ok=ok)
        self._apply_rates()
        if self._queue:
            self._wake()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: hold every request until Retry-After passes, and step the rates down."""
        if self._learner.refused(retry_after):
            self._apply_rates()

    def sending(self, ticket: Ticket) -> None:
        """The admitted request goes on the wire now. Admission may have been a few milliseconds before
        (the event loop was busy); counting from now keeps that delay out of the arrival slack."""
        if ticket.request_entry is not None and self._request_window is not None:
            self._request_window.touch(ticket.request_entry)
        if ticket.token_entry is not None and self._token_window is not None:
            self._token_window.touch(ticket.token_entry)

    def settle(self, ticket: Ticket, actual: int | None, *, rate_limited: bool = False) -> None:
        """Correct a booking once the provider has answered: `actual` tokens counted, None if it did not count
        the request (refused it, or it was never sent). An answer that counted no tokens still counts as a request.

        A request refused with a 429 keeps its place in the pace: given back, it would go again at once
        and, when others spend the same limit, be refused again, over and over."""
        if actual is None:
            actual = 0
            if ticket.request_entry is not None and self._request_window is not None:
                self._request_window.correct(ticket.request_entry, 0)
            if self._requests is not None and not rate_limited:
                self._requests.refund(1)
        if ticket.token_entry is not None and self._token_window is not None:
            self._token_window.correct(ticket.token_entry, actual)
        if self._tokens is not None and actual != ticket.tokens:
            if actual < ticket.tokens:
                self._tokens.refund(ticket.tokens - actual)
            else:
                self._tokens.charge(actual - ticket.tokens)
        if self._queue:
            self._wake()

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this endpoint and model until `seconds` from now (one shared wait)."""
        self._learner.cool_down(seconds)

    def stats(self) -> LimiterStats:
        return LimiterStats(
            rpm_limit=self._request_rate.ceiling,
            tpm_limit=self._token_rate.ceiling,
            rpm_pace=self._request_rate.rate,
            tpm_pace=self._token_rate.rate,
            waiting=len(self._queue),
            cool_downs=self._learner.cool_downs,
            cooling_for_s=max(0.0, self._learner.resume_at - self._clock()),
        )

    def _apply_rates(self) -> None:
        self._requests = _paced(self._requests, self._request_rate.rate, self._clock)
        self._tokens = _paced(self._tokens, self._token_rate.rate, self._clock)
        if self._request_window is None and self._request_rate.rate is not None:
            self._request_window = self._window_since(self._request_rate.rate, lambda tokens: 1)
        if self._token_window is None and self._token_rate.rate is not None:
            self._token_window = self._window_since(self._token_rate.rate, lambda tokens: tokens)
        for window, rate in ((self._request_window, self._request_rate), (self._token_window, self._token_rate)):
            if window is not None and rate.rate is not None:
                window.limit = rate.rate / 60.0

    def _window_since(self, per_minute: float, amount: Callable[[int], int]) -> SlidingWindow:
        """A one-second log for a rate just learned, holding what went in the last second before it was known.

        Those went in a burst, opening connections, and may have reached the provider well after they were
        let go; now, when an answer has come, is no earlier than nearly all of them arrived.
        """
        window = SlidingWindow(per_minute / 60.0, span_s=1.0 + ARRIVAL_SLACK_S, clock=self._clock)
        now = self._clock()
        recent = sum(amount(tokens) for at, tokens in self._learner.sent if at > now - window.span_s)
        if recent:
            window.add(recent)
        return window


def _paced(bucket: TokenBucket | None, per_minute: float | None, clock: Callable[[], float]) -> TokenBucket | None:
    """The bucket for a per-minute rate: made, retuned, or dropped as the rate comes and goes."""
    if per_minute is None:
        return None
    rate = per_minute / 60.0 * HEADROOM
    capacity = max(1.0, rate * BURST_S)
    if bucket is None:
        return TokenBucket(rate, capacity, clock=clock)
    if bucket.rate_per_s != rate:
        bucket.set_rate(rate, capacity)
    return bucket
