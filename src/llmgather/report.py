"""The summary at the end of a run: counts, errors by type, latency percentiles, tokens, cost, time."""

from __future__ import annotations

from collections.abc import Sequence

from llmgather.engine import EngineStats
from llmgather.progress import pace_text


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def summary_lines(all_stats: Sequence[EngineStats], wall_s: float) -> list[str]:
    """Plain text, one block per model; the same text on a terminal and in a log."""
    lines = []
    for stats in all_stats:
        total_tokens = stats.prompt_tokens + stats.completion_tokens
        rate = stats.done / wall_s if wall_s > 0 else 0.0
        lines.append(f"{stats.model} at {stats.endpoint}")
        lines.append(
            f"  requests   {stats.done} done: {stats.succeeded} succeeded"
            + (f" ({stats.cached} from the cache)" if stats.cached else "")
            + f", {stats.failed} failed"
            + (f"; stopped by {stats.stopped_by}" if stats.stopped_by else "")
        )
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
        lines.append(
            f"  retries    {stats.retries} ({stats.rate_limited} rate-limited, {stats.timeouts} timed out), "
            f"{stats.limiter.cool_downs} cool-downs"
            + (f", provider outage paused sending {stats.circuit_openings}x" if stats.circuit_openings else "")
        )
        lines.append(f"  pace       {pace_text(stats.limiter)}")
        if stats.cost_usd:
            lines.append(f"  cost       ${stats.cost_usd:.4f}")
        lines.append(f"  time       {wall_s:.2f}s wall, {rate:.1f} req/s")
    return lines
