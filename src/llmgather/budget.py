"""Spending limits for a whole run: a cost in USD and a number of requests, shared by every model in it.

Requests are counted as they are sent, so `max_requests` is never exceeded. A cost is known only once its
answer comes, so each request in flight holds its estimated cost (its completion budget, or the typical
completion so far) until then. A request goes only if the spend, what is held and its own estimate fit under
`max_cost_usd`; if they do not but something is held, it waits for that to settle, since answers often cost
less than their estimates. The spend can go over only by how far answers exceed their estimates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Budget:
    max_cost_usd: float | None = None
    max_requests: int | None = None
    spent_usd: float = 0.0
    held_usd: float = 0.0
    requests: int = 0
    refused_usd: float | None = None
    """The estimate that did not fit in what was left, once one has not."""
    _settled: asyncio.Event | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None and self.max_cost_usd <= 0:
            raise ValueError("max_cost_usd must be positive")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests must be at least 1")

    async def take(self, estimate_usd: Callable[[], float]) -> float | None:
        """Count one request about to be sent and hold its estimated cost, which is returned; None if the
        budget cannot cover it. The estimate is asked again after each wait: answers seen meanwhile refine it."""
        while True:
            estimate = estimate_usd()
            taken = self.try_take(estimate)
            if taken is not None:
                return estimate if taken else None
            if self._settled is None:
                self._settled = asyncio.Event()
            await self._settled.wait()

    def try_take(self, estimate_usd: float = 0.0) -> bool | None:
        """True: taken. False: the budget is spent. None: it fits only once what is held settles."""
        if self.exhausted() is not None:
            return False
        limit = self.max_cost_usd
        if limit is not None and self.spent_usd + self.held_usd + estimate_usd > limit:
            if self.held_usd > 0:
                return None
            # With nothing spent a request goes anyway, so a cautious first estimate (no completion seen
            # yet) cannot stop a run before it starts.
            if self.spent_usd > 0:
                self.refused_usd = estimate_usd
                return False
        self.requests += 1
        self.held_usd += estimate_usd
        return True

    def release(self, estimate_usd: float) -> None:
        """A request taken with `estimate_usd` is over; what it cost, if anything, comes through `charge`."""
        self.held_usd = max(0.0, self.held_usd - estimate_usd)
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def charge(self, cost_usd: float) -> None:
        self.spent_usd += cost_usd

    def exhausted(self) -> str | None:
        """Why nothing more may be sent, or None while there is budget left."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            return f"the budget of {self.max_requests} requests is spent"
        if self.max_cost_usd is None:
            return None
        if self.spent_usd >= self.max_cost_usd:
            return f"the budget of ${self.max_cost_usd:g} is spent (${self.spent_usd:.4f})"
        if self.refused_usd is not None:
            return (
                f"the budget of ${self.max_cost_usd:g} has too little left for another request"
                f" (${self.spent_usd:.4f} spent; the next was estimated at ${self.refused_usd:.4f})"
            )
        return None
