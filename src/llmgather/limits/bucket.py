"""A weighted token bucket: pure arithmetic on an injected clock; the limiter does the waiting.

`rate_per_s` units flow in; at most `capacity` are kept while nobody waits. A request takes its amount
once the level covers all of it ("pay before"), which is how providers count: a request's tokens are
counted against the window it arrives in. While a request waits, the bucket may fill up to its amount
plus the capacity, so a request larger than the capacity is not refused, and a waiter let in a little
late loses nothing to the cap. Over any window of W seconds, at most rate * W + capacity units go.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("_capacity", "_ceiling", "_clock", "_level", "_rate", "_updated")

    def __init__(
        self,
        rate_per_s: float,
        capacity: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        level: float | None = None,
    ):
        """`level`: what it holds at first (full, unless a fresh run is to ramp up)."""
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("a bucket needs a positive rate and capacity")
        self._rate = rate_per_s
        self._capacity = capacity
        self._clock = clock
        self._ceiling = capacity
        self._level = capacity if level is None else min(capacity, level)
        self._updated = clock()

    @property
    def rate_per_s(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    def level(self) -> float:
        self._refill()
        return self._level

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` may be taken (0.0: now). From now on the bucket fills far enough for it."""
        self._refill()
        self._ceiling = max(self._ceiling, amount + self._capacity)
        missing = amount - self._level
        # A shortfall of rounding error is no shortfall: waiting it out could not move a clock of float seconds.
        return 0.0 if missing <= 1e-9 * self._capacity else missing / self._rate

    def take(self, amount: float) -> None:
        """Take `amount`; call when `wait_for(amount)` is 0."""
        self._refill()
        self._level -= amount
        self._ceiling = self._capacity
        self._level = min(self._level, self._capacity)

    def refund(self, amount: float, taken: float = 0.0) -> None:
        """Give back units taken but not used (an over-estimate, a request never sent). `taken`: what the
        request took. A request larger than the capacity was let fill the bucket up to it, so what it gives
        back may fill it that far again: capped at the capacity, a reservation larger than it (Anthropic's
        `max_tokens`) would lose what was not used, and pace at the reservation, not at what was used."""
        self._refill()
        self._level = min(max(self._capacity, taken), self._level + amount)

    def charge(self, amount: float) -> None:
        """Take units used beyond what was taken (an under-estimate): later requests wait them out."""
        self._refill()
        self._level -= amount

    def set_rate(self, rate_per_s: float, capacity: float) -> None:
        self._refill()
        self._rate = rate_per_s
        self._capacity = capacity
        self._ceiling = max(self._ceiling - self._capacity + capacity, capacity)
        self._level = min(self._level, self._ceiling)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._level = min(self._ceiling, self._level + elapsed * self._rate)
            self._updated = now

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self._rate:.3f}/s capacity={self._capacity:.1f} level={self.level():.2f}>"
