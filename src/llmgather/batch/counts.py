"""What a batch run's view and summary show: each batch's state and counts, and how the work went each way."""

from __future__ import annotations

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

    @property
    def eta_s(self) -> float | None:
        """Left to wait, from the batches' progress so far; None until they have made some."""
        return None
