"""What a person sees while a run goes: a live view on a terminal, a plain line every few seconds elsewhere.

It only reads `EngineStats` snapshots; the engines never know it exists.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

from llmgather.engine import EngineStats
from llmgather.limits import LimiterStats

if TYPE_CHECKING:
    from rich.table import Table

StatsSource = Callable[[], Sequence[EngineStats]]
RATE_WINDOW_S = 10.0


class _Rates:
    """Requests and tokens per second over the last few seconds, from successive snapshots."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque()

    def update(self, stats: EngineStats) -> tuple[float, float]:
        now = time.monotonic()
        sample = (now, stats.done, stats.prompt_tokens + stats.completion_tokens)
        self._samples.append(sample)
        while len(self._samples) > 2 and self._samples[0][0] < now - RATE_WINDOW_S:
            self._samples.popleft()
        first = self._samples[0]
        span = now - first[0]
        if span <= 0:
            return 0.0, 0.0
        return (sample[1] - first[1]) / span, (sample[2] - first[2]) / span


def _eta(remaining: int, rate: float) -> str:
    if remaining <= 0:
        return "0s"
    if rate <= 0:
        return "?"
    seconds = int(remaining / rate)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def pace_text(limiter: LimiterStats) -> str:
    """The pace against the limit, per minute: '5,880/6,000 rpm' (pace below the limit after 429s)."""
    parts = []
    for pace, limit, unit in (
        (limiter.rpm_pace, limiter.rpm_limit, "rpm"),
        (limiter.tpm_pace, limiter.tpm_limit, "tpm"),
    ):
        if limit is not None:
            parts.append(f"{pace or limit:,.0f}/{limit:,.0f} {unit}")
        elif pace is not None:
            parts.append(f"{pace:,.0f} {unit} (learned from 429s)")
    return ", ".join(parts) if parts else "no limit known"


def _notes(stats: EngineStats) -> str:
    notes = []
    if stats.limiter.waiting:
        notes.append(f"{stats.limiter.waiting} waiting")
    if stats.limiter.cooling_for_s > 0:
        notes.append(f"cooling {stats.limiter.cooling_for_s:.1f}s")
    if stats.circuit_open:
        notes.append("provider failing: probing")
    if stats.cached:
        notes.append(f"{stats.cached} cached")
    return "".join(f", {note}" for note in notes)


def plain_line(stats: EngineStats, total: int | None, rates: tuple[float, float]) -> str:
    """One model's progress; `total` None for a fallback, which gets only what others fail."""
    per_s, tokens_per_s = rates
    done = f"{stats.done} done as a fallback" if total is None else f"{stats.done}/{total} done"
    eta = "" if total is None else f", ETA {_eta(total - stats.done, per_s)}"
    return (
        f"{stats.model}: {done} ({stats.succeeded} ok, {stats.failed} failed), "
        f"{stats.in_flight} in flight{_notes(stats)}, {per_s:.1f} req/s, {tokens_per_s:.0f} tok/s, "
        f"pace {pace_text(stats.limiter)}, {stats.retries} retries, {stats.rate_limited} 429s{eta}"
    )


class Progress:
    """Refreshes until stopped. Mode: 'live' (rich, on a terminal), 'plain' (a line every few seconds), 'quiet'."""

    def __init__(
        self,
        source: StatsSource,
        total: int,
        *,
        mode: str,
        stream: IO[str],
        plain_every_s: float = 5.0,
        fallbacks: frozenset[str] = frozenset(),
    ):
        self._source = source
        self._total = total
        self._fallbacks = fallbacks  # their lines have no total: they get only what other models fail
        self._mode = mode
        self._stream = stream
        self._plain_every_s = plain_every_s
        self._rates: dict[str, _Rates] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Progress:
        if self._mode != "quiet":
            self._task = asyncio.create_task(self._live() if self._mode == "live" else self._plain())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _rates_of(self, stats: EngineStats) -> tuple[float, float]:
        return self._rates.setdefault(stats.model, _Rates()).update(stats)

    async def _plain(self) -> None:
        while True:
            await asyncio.sleep(self._plain_every_s)
            for stats in self._source():
                total = None if stats.model in self._fallbacks else self._total
                print(plain_line(stats, total, self._rates_of(stats)), file=self._stream, flush=True)

    async def _live(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self._stream)
        with Live(self._render(), console=console, refresh_per_second=4, transient=False) as live:
            try:
                while True:
                    await asyncio.sleep(0.25)
                    live.update(self._render())
            finally:
                live.update(self._render())

    def _render(self) -> Table:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in (
            "model",
            "",
            "done",
            "ok",
            "failed",
            "in flight",
            "waiting",
            "req/s",
            "tok/s",
            "retries",
            "429s",
            "pace/limit per min",
            "ETA",
        ):
            table.add_column(column, justify="left" if column in ("model", "") else "right")
        for stats in self._source():
            per_s, tokens_per_s = self._rates_of(stats)
            cooling = f" (cool {stats.limiter.cooling_for_s:.1f}s)" if stats.limiter.cooling_for_s > 0 else ""
            if stats.circuit_open:
                cooling += " [yellow]provider failing: probing[/]"
            fallback = stats.model in self._fallbacks
            table.add_row(
                stats.model,
                "(fallback)" if fallback else ProgressBar(total=self._total, completed=stats.done, width=24),
                str(stats.done) if fallback else f"{stats.done}/{self._total}",
                str(stats.succeeded),
                f"[red]{stats.failed}[/]" if stats.failed else "0",
                str(stats.in_flight),
                str(stats.limiter.waiting),
                f"{per_s:.1f}",
                f"{tokens_per_s:.0f}",
                str(stats.retries),
                f"{stats.rate_limited}{cooling}",
                pace_text(stats.limiter),
                "" if fallback else _eta(self._total - stats.done, per_s),
            )
        return table
