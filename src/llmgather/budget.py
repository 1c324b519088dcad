"""Spending limits for a whole run: a cost in USD and a number of requests, shared by every model in it.

Requests are counted as they are sent, so `max_requests` is never exceeded. A cost is known only once its
answer comes, so each request in flight holds its estimated cost (its completion budget, or the typical
completion so far) until then. A request goes only if the spend, what is held and its own estimate fit under
`max_cost_usd`; if they do not but something is held, it waits for that to settle, since answers often cost
less than their estimates. With nothing spent or held, a request whose estimate does not fit still goes if
the part of its cost that is certain (its prompt) fits: a cautious first estimate cannot stop a run before it
starts, but a request sure to cost more than the whole budget is never sent. The spend can go over only by how
far answers exceed their estimates.

Money is counted in whole nano-dollars: with floats, holds taken and released in another order left a residue
(5.6e-18 held with nothing in flight), and a request waited forever for it to settle.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

NANO_USD = 1_000_000_000
"""Units of money per dollar."""


def to_units(usd: float) -> int:
    """Dollars as whole units (to the nearest; nothing below zero)."""
    return round(usd * NANO_USD) if usd > 0 else 0


@dataclass(slots=True)
class Budget:
    max_cost_usd: float | None = None
    max_requests: int | None = None
    requests: int = 0
    spent: int = 0
    """Nano-dollars charged for answers."""
    held: int = 0
    """Nano-dollars held by requests in flight: exactly 0 when none is."""
    refused_usd: float | None = None
    """The estimate that did not fit in what was left, once one has not."""
    _limit: int | None = field(default=None, repr=False)
    _settled: asyncio.Event | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None:
            if not self.max_cost_usd > 0 or math.isinf(self.max_cost_usd):
                raise ValueError("max_cost_usd must be a positive number")
            self._limit = to_units(self.max_cost_usd)
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests must be at least 1")

    @property
    def spent_usd(self) -> float:
        return self.spent / NANO_USD

    @property
    def held_usd(self) -> float:
        return self.held / NANO_USD

    async def take(self, estimate_usd: Callable[[], float], certain_usd: float = 0.0) -> int | None:
        """Count one request about to be sent and hold its estimated cost; returns the units held, to give
        back to `release`, or None if the budget cannot cover it. The estimate is asked again after each wait:
        answers seen meanwhile refine it. `certain_usd` is the part of the cost that no answer can lower."""
        certain = to_units(certain_usd)
        while True:
            units = to_units(estimate_usd())
            taken = self.try_take_units(units, certain)
            if taken is not None:
                return units if taken else None
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()

    def try_take(self, estimate_usd: float = 0.0, certain_usd: float = 0.0) -> bool | None:
        """True: taken. False: the budget is spent. None: it fits only once what is held settles."""
        return self.try_take_units(to_units(estimate_usd), to_units(certain_usd))

    def try_take_units(self, units: int, certain: int = 0) -> bool | None:
        """As `try_take`, in nano-dollars: `units` estimated, of which `certain` is sure to be spent."""
        if self.exhausted() is not None:
            return False
        limit = self._limit
        if limit is not None and self.spent + self.held + units > limit:
            if self.held > 0:
                return None
            # With nothing spent a request goes anyway, so a cautious first estimate (no completion seen
            # yet) cannot stop a run before it starts; but not one whose prompt alone costs more than all.
            if self.spent > 0 or certain > limit:
                self.refused_usd = units / NANO_USD
                return False
        self.requests += 1
        self.held += units
        return True

    def release(self, units: int) -> None:
        """A request that `take` held `units` for is over; what it cost, if anything, comes through `charge`."""
        self.held -= units
        assert self.held >= 0, "released more than was held"
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def charge(self, cost_usd: float) -> None:
        self.spent += to_units(cost_usd)

    def exhausted(self) -> str | None:
        """Why nothing more may be sent, or None while there is budget left."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            return f"the budget of {self.max_requests} requests is spent"
        if self._limit is None:
            return None
        if self.spent >= self._limit:
            return f"the budget of ${self.max_cost_usd:g} is spent (${self.spent_usd:.4f})"
        if self.refused_usd is not None:
            return (
                f"the budget of ${self.max_cost_usd:g} has too little left for another request"
                f" (${self.spent_usd:.4f} spent; the next was estimated at ${self.refused_usd:.4f})"
            )
        return None
