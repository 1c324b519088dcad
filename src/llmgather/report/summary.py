"""The text at the end of a run (counts, errors by type, latency, tokens, retries, cost, time) and the
estimate printed by `--dry-run`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmgather.engine import EngineStats
from llmgather.limits.tokens import DEFAULT_COMPLETION_TOKENS
from llmgather.pricing import Prices
from llmgather.progress import pace_text
from llmgather.types import Usage


def summary_lines(all_stats: Sequence[EngineStats], wall_s: float) -> list[str]:
    """Plain text, one block per model; the same text on a terminal and in a log."""
    lines = []
    for stats in all_stats:
        total_tokens = stats.prompt_tokens + stats.completion_tokens
        rate = stats.done / wall_s if wall_s > 0 else 0.0
        lines.append(f"{stats.model} at {stats.endpoint}")
        lines.append(f"  requests   {_requests(stats)}")
        if stats.errors_by_type:
            errors = ", ".join(f"{name} {count}" for name, count in sorted(stats.errors_by_type.items()))
            lines.append(f"  errors     {errors}")
        lines.append(
            f"  latency    p50 {_seconds(stats.latency_p50_s)}  p95 {_seconds(stats.latency_p95_s)}  "
            f"p99 {_seconds(stats.latency_p99_s)}"
        )
        lines.append(
            f"  tokens     {total_tokens:,} ({stats.prompt_tokens:,} prompt, {stats.completion_tokens:,} completion)"
        )
        if stats.cache_read_tokens or stats.cache_write_tokens:
            lines.append(f"  cached     {_cached(stats.cache_read_tokens, stats.cache_write_tokens)}")
        lines.append(f"  attempts   {_attempts(stats)}")
        lines.append(f"  pace       {pace_text(stats.limiter)}")
        if stats.cost_usd:
            lines.append(f"  cost       ${stats.cost_usd:.4f}")
        if stats.batch is not None:
            lines.extend(_batch_lines(stats))
        lines.append(f"  time       {wall_s:.2f}s wall, {rate:.1f} req/s")
    return lines


def _batch_lines(stats: EngineStats) -> list[str]:
    """How the work went each way, and what the batches saved against sending everything online."""
    counts = stats.batch
    assert counts is not None
    online_cost = stats.cost_usd - counts.batch_cost_usd
    lines = [
        f"  batches    {counts.submitted} submitted this run; {counts.batched} results through batches"
        f" (${counts.batch_cost_usd:.4f}), {counts.online} sent online after --by (${online_cost:.4f})"
    ]
    if counts.batch_online_price_usd:
        all_online = counts.batch_online_price_usd + online_cost
        lines.append(
            f"  saved      ${all_online - stats.cost_usd:.4f}: ${stats.cost_usd:.4f} against ${all_online:.4f}"
            f" all online ({stats.cost_usd / all_online:.2f}x)"
        )
    return lines


def _requests(stats: EngineStats) -> str:
    return (
        f"{stats.done} done: {stats.succeeded} succeeded"
        + (f" ({stats.cached} from the cache)" if stats.cached else "")
        + (f" ({stats.fell_back} answered by a fallback)" if stats.fell_back else "")
        + f", {stats.failed} failed"
        + (f"; {_stopped(stats.stopped_by)}" if stats.stopped_by else "")
    )


def _cached(read: int, written: int) -> str:
    """Prompt tokens the provider's cache served or stored, parts of the prompt count, each billed at its rate."""
    parts = [f"{read:,} read from the prompt cache"] if read else []
    parts += [f"{written:,} written to it" if read else f"{written:,} written to the prompt cache"] if written else []
    return ", ".join(parts) + " (of the prompt tokens)"


def _attempts(stats: EngineStats) -> str:
    """Retries beside the failed attempts by kind, as siblings: a 429 or a timeout on a request's last attempt
    (or at a stop) is not retried, so there can be more 429s than retries, and neither count is in the other."""
    line = (
        f"{stats.retries} retries; {stats.rate_limited} answered 429, {stats.timeouts} timed out; "
        f"{stats.limiter.cool_downs} cool-downs"
    )
    if stats.circuit_openings:
        line += f"; provider outage paused sending {stats.circuit_openings}x"
    return line


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _stopped(reason: str) -> str:
    """The engine's stop reason (an error type, `budget`, `interrupted`, `stopped`) as words."""
    phrases = {"budget": "stopped at the budget", "interrupted": "stopped by a signal", "stopped": "stopped"}
    return phrases.get(reason, f"stopped by {reason}")


@dataclass(slots=True)
class Estimate:
    """What a run would send to one model, estimated before sending anything (`--dry-run`)."""

    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unbudgeted: int = 0
    """Requests without max_tokens, whose completion is counted at the default guess."""
    prices: Prices | None = None

    @property
    def cost_usd(self) -> float | None:
        return None if self.prices is None else self.prices.cost_usd(Usage(self.prompt_tokens, self.completion_tokens))


def dry_run_lines(estimates: Sequence[Estimate]) -> list[str]:
    lines = [f"{'model':<32} {'requests':>9} {'prompt tokens':>14} {'completion tokens':>18} {'cost USD':>10}"]
    for e in estimates:
        cost = f"{e.cost_usd:.4f}" if e.cost_usd is not None else "unknown"
        lines.append(f"{e.model:<32} {e.requests:>9,} {e.prompt_tokens:>14,} {e.completion_tokens:>18,} {cost:>10}")
    total = [e.cost_usd for e in estimates]
    if len(estimates) > 1 and all(c is not None for c in total):
        lines.append(f"{'total':<32} {'':>9} {'':>14} {'':>18} {sum(c or 0 for c in total):>10.4f}")
    unbudgeted = max((e.unbudgeted for e in estimates), default=0)
    if unbudgeted:
        lines.append(
            f"{unbudgeted:,} requests set no max_tokens: their completions are counted at "
            f"{DEFAULT_COMPLETION_TOKENS} tokens each. Prompt tokens are estimated from characters."
        )
    if any(e.prices is None for e in estimates):
        lines.append("Cost is unknown for models without a price: give one with --price MODEL=IN,OUT.")
    lines.append("Nothing was sent (--dry-run).")
    return lines
