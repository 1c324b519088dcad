"""Spending limits for a whole run: a cost in USD and a number of requests, shared by every model in it.

Requests are counted as they are sent, so `max_requests` is never exceeded. Cost is known only once an
answer comes, so a run stops when the spend reaches `max_cost_usd` and may go over it by what was
already in flight.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Budget:
    max_cost_usd: float | None = None
    max_requests: int | None = None
    spent_usd: float = 0.0
    requests: int = 0

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None and self.max_cost_usd <= 0:
            raise ValueError("max_cost_usd must be positive")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("max_requests must be at least 1")

    def take_request(self) -> bool:
        """Count one request about to be sent; False (and nothing counted) if the budget has none left."""
        if self.exhausted() is not None:
            return False
        self.requests += 1
        return True

    def charge(self, cost_usd: float) -> None:
        self.spent_usd += cost_usd

    def exhausted(self) -> str | None:
        """Why nothing more may be sent, or None while there is budget left."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            return f"the budget of {self.max_requests} requests is spent"
        if self.max_cost_usd is not None and self.spent_usd >= self.max_cost_usd:
            return f"the budget of ${self.max_cost_usd:g} is spent (${self.spent_usd:.4f})"
        return None
