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
    ended_at: float | None = None
    """Unix time it was first seen ended."""

    def eta_s(self, now: float, typical_s: float | None = None) -> float | None:
        """Left of it: at the pace it has kept since it was submitted, or, before it reports any progress
        (Anthropic's counts say nothing until the end), what the run's ended batches took; None if neither."""
        if self.state == "ended":
            return 0.0
        elapsed = now - self.submitted_at
        if self.done and self.total:
            return max(0.0, elapsed * (self.total - self.done) / self.done)
        return None if typical_s is None else max(0.0, typical_s - elapsed)


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
        """Left to wait for the batches still live, from their progress so far or from how long the ended ones
        took; None while nothing tells."""
        now = time.time()
        took = [v.ended_at - v.submitted_at for v in self.views.values() if v.ended_at is not None]
        typical = sum(took) / len(took) if took else None
        known = [eta for eta in (view.eta_s(now, typical) for view in self.views.values()) if eta is not None]
        return max(known) if known else None

    def states_text(self) -> str:
        """'2 in_progress 340/1,000, 1 validating, 3 ended'."""
        live = [view for view in self.views.values() if view.state == "in_progress"]
        by_state = Counter(view.state for view in self.views.values())
        done, total = sum(v.done for v in live), sum(v.total for v in live)
        parts = [
            f"{count} {state}" + (f" {done:,}/{total:,}" if state == "in_progress" else "")
            for state, count in sorted(by_state.items(), key=lambda kv: _ORDER.index(kv[0]))
        ]
        return "batches " + (", ".join(parts) or "none yet")


_ORDER = ["validating", "in_progress", "finalizing", "ended"]
