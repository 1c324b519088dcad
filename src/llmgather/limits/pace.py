"""One budget of one limiter: requests, tokens in and out together, tokens in, or tokens out.

Each paces at its own per-minute rate (told, announced, or taught by 429s: an `Aimd`) with a token bucket that
keeps the pace over minutes and a one-second window that keeps every second exact (see `window`). When the
provider says what is left of the budget but not when it is whole again, it counts per clock window (LiteLLM
Proxy does): then what it says is left may go at once, and the pace holds only once that is spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from llmgather.limits.adaptive import Aimd
from llmgather.limits.bucket import TokenBucket
from llmgather.limits.headers import Announced, Kind
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
# A fresh bucket holds only this many seconds of its opening rate: nothing saved up goes in a burst at the start.
OPENING_S = 0.1


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request is counted for, in tokens: its prompt, and its completion (reserved, or used)."""

    input: int = 0
    output: int = 0
    held_output: int = 0
    """Completion tokens counted against the combined budget however few were used: OpenAI counts `max_tokens`."""

    def of(self, kind: Kind) -> int:
        if kind is Kind.REQUESTS:
            return 1
        if kind is Kind.TOKENS:
            return self.input + max(self.output, self.held_output)
        return self.input if kind is Kind.INPUT else self.output


@dataclass(slots=True)
class Booking:
    """What one admitted request took from one budget, to correct once the provider has answered."""

    pace: Pace
    amount: int
    bucket: TokenBucket | None
    entry: WindowEntry | None


class Pace:
    __slots__ = ("_clock", "allowance", "bucket", "in_flight", "kind", "rate", "taken", "window")

    def __init__(self, kind: Kind, rate: Aimd, clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.rate = rate
        self._clock = clock
        self.bucket: TokenBucket | None = None
        self.window: SlidingWindow | None = None
        self.allowance: float | None = None
        """What the provider said is left of a budget it counts per clock window, less what went since."""
        self.in_flight = 0
        """Admitted and not yet settled."""
        self.taken = False

    def delay(self, amount: int) -> float:
        """Seconds until `amount` more may go (0.0: now). The first request goes at once, whatever its size."""
        if self._by_allowance(amount):
            return 0.0
        delay = 0.0
        if self.bucket is not None and self.taken:
            delay = self.bucket.wait_for(amount)
        if self.window is not None:
            delay = max(delay, self.window.wait_for(amount))
        return delay

    def take(self, amount: int) -> Booking:
        from_allowance = self._by_allowance(amount)
        bucket = None if from_allowance else self.bucket
        if from_allowance:
            assert self.allowance is not None
            self.allowance -= amount
        elif bucket is not None:
            bucket.take(amount)  # the first may take more than it holds: those after it wait that out
        self.taken = True
        entry = self.window.add(amount) if self.window is not None else None
        self.in_flight += amount
        return Booking(self, amount, bucket, entry)

    def settle(self, booking: Booking, counted: int | None, *, keep_pace: bool) -> None:
        """The provider counted `counted` of it (None: it did not count the request at all). `keep_pace`: a
        request it refused keeps its place in the pace, or, given back, it would go again at once."""
        self.in_flight -= booking.amount
        actual = counted or 0
        if booking.entry is not None and self.window is not None:
            self.window.correct(booking.entry, actual)
        bucket = booking.bucket
        if bucket is None or bucket is not self.bucket or (counted is None and keep_pace):
            return
        if actual < booking.amount:
            bucket.refund(booking.amount - actual, booking.amount)
        elif actual > booking.amount:
            bucket.charge(actual - booking.amount)

    def heard(self, seen: Announced) -> None:
        """An answer announced this budget. With no reset said, what it says is left may go at once; requests
        still in flight may not be counted in it yet, so they are taken off it."""
        told = self.rate.told
        paced_below = told is not None and (seen.limit is None or told < seen.limit)  # the user keeps some back
        if seen.remaining is None or seen.reset_s is not None or paced_below:
            self.allowance = None
            return
        self.allowance = seen.remaining - self.in_flight

    def retune(self, ramp: float, seed: Callable[[Kind, SlidingWindow], None], share: float = 1.0) -> None:
        """Follow the rate: a bucket and window are made when a rate is first known, retuned as it moves. While a
        fresh run ramps up the bucket fills at `ramp`, a share of the rate (it opens holding a tenth of a second of
        that), and the window keeps the whole second's limit: the bucket is the one that holds back then.
        `share`: the part of the rate that is this process's, when others spend the same limit (see `shared`)."""
        per_minute = self.rate.rate
        if per_minute is None:
            return
        per_minute *= share
        rate = per_minute / 60.0 * HEADROOM * ramp
        capacity = max(1.0, per_minute / 60.0 * HEADROOM * BURST_S)
        if self.bucket is None:
            self.bucket = TokenBucket(
                rate, capacity, clock=self._clock, level=capacity if ramp >= 1.0 else min(capacity, rate * OPENING_S)
            )
        elif self.bucket.rate_per_s != rate:
            self.bucket.set_rate(rate, capacity)
        if self.window is None:
            self.window = SlidingWindow(per_minute / 60.0, span_s=1.0 + ARRIVAL_SLACK_S, clock=self._clock)
            seed(self.kind, self.window)
        self.window.limit = per_minute / 60.0

    def _by_allowance(self, amount: int) -> bool:
        return self.allowance is not None and amount <= self.allowance
