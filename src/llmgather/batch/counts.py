"""What a batch run's view and summary show: each batch's state and counts, and how the work went each way."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class BatchView:
    """One batch, as last polled."""

    part: int
    batch_id: str | None
    state: str
    """validating, in_progress, finalizing or ended (see `batch.api.BatchState`)."""
    total: int
    done: int
    failed: int
    submitted_at: float
    """Unix time."""

    def eta_s(self, now: float) -> float | None:
        """Left of it, at the pace it has kept since it was submitted; None before it has done anything."""
        if self.state == "ended":
            return 0.0
        if not self.done or not self.total:
            return None
        elapsed = now - self.submitted_at
        return max(0.0, elapsed * (self.total - self.done) / self.done)


@dataclass(slots=True)
class BatchCounts:
    """How a model's requests went: through batches or online (after `--by`), and what that cost."""

    batched: int = 0
    """Results from a batch (errors included)."""
    online: int = 0
    """Results sent online after `--by`."""
    batch_cost_usd: float = 0.0
    batch_online_price_usd: float = 0.0
    """What the batch-answered requests would have cost online, for the same tokens."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    submitted: int = 0
    """Batches this run created."""
    views: dict[int, BatchView] = field(default_factory=dict)
    """Each batch by its part number."""

    def eta_s(self) -> float | None:
        """Left to wait for the batches still live, from their progress so far; None until each has made some."""
        now = time.time()
        longest = 0.0
        for view in self.views.values():
            eta = view.eta_s(now)
            if eta is None:
                return None
            longest = max(longest, eta)
        return longest

    def states_text(self) -> str:
        """'2 in_progress 340/1,000, 1 validating, 3 ended'."""
        live = [view for view in self.views.values() if view.state != "ended"]
        by_state = Counter(view.state for view in self.views.values())
        done, total = sum(v.done for v in live), sum(v.total for v in live)
        parts = [
            f"{count} {state}" + (f" {done:,}/{total:,}" if state == "in_progress" else "")
            for state, count in sorted(by_state.items(), key=lambda kv: _ORDER.index(kv[0]))
        ]
        return "batches " + (", ".join(parts) or "none yet")


_ORDER = ["validating", "in_progress", "finalizing", "ended"]
