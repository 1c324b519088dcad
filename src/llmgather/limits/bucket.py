"""An exact weighted token bucket, pure and clock-injected.

Reservation style (GCRA): `reserve(n)` books n units at once and says how long to wait before using
them. The level may go below zero: that debt is what later arrivals wait out, so waiters are served
strictly in arrival order and nothing polls. A request larger than the whole capacity is not refused:
it is booked like any other and waits until the bucket has refilled enough to pay for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("_capacity", "_clock", "_level", "_rate", "_updated")

    def __init__(self, rate_per_s: float, capacity: float, *, clock: Callable[[], float] = time.monotonic):
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("a bucket needs a positive rate and capacity")
        self._rate = rate_per_s
        self._capacity = capacity
        self._clock = clock
        self._level = capacity
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

    def reserve(self, amount: float) -> float:
        """Book `amount` now; return the seconds to wait before it may be used (0.0: at once)."""
        self._refill()
        self._level -= amount
        return 0.0 if self._level >= 0 else -self._level / self._rate

    def refund(self, amount: float) -> None:
        """Give back units booked but not used (a cancelled wait, an over-estimate)."""
        self._refill()
        self._level = min(self._capacity, self._level + amount)

    def charge(self, amount: float) -> None:
        """Take units used beyond what was booked (an under-estimate); they are waited out by later arrivals."""
        self._refill()
        self._level -= amount

    def set_rate(self, rate_per_s: float, capacity: float | None = None) -> None:
        self._refill()
        self._rate = rate_per_s
        if capacity is not None:
            self._capacity = capacity
            self._level = min(self._level, capacity)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = now - self._updated
        if elapsed > 0:
            self._level = min(self._capacity, self._level + elapsed * self._rate)
            self._updated = now

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self._rate:.3f}/s capacity={self._capacity:.1f} level={self.level():.2f}>"
