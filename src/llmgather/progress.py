"""What a person sees while a run goes: a live view on a terminal, a plain line every few seconds elsewhere.

It only reads `EngineStats` snapshots; the engines never know it exists. The live view is laid out for
the width it gets, never cut: the columns that fit stay in the row, most important first, and the rest
move to a line of their own beneath it; on a narrow terminal the model's name takes a line of its own.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from llmgather.engine import EngineStats
from llmgather.limits import LimiterStats
from llmgather.limits.shared_state import SharedStats

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.text import Text

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
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def pace_text(limiter: LimiterStats) -> str:
    """The pace against the limit, per minute: '5,880/6,000 rpm' (pace below the limit after 429s), and with
    whom it is shared."""
    text = ", ".join(_pace_parts(limiter)) or "no limit known"
    return text if limiter.shared is None else f"{text}; {shared_text(limiter.shared)}"


def shared_text(shared: SharedStats) -> str:
    """'shared by 4 processes, 26% here' (or, while the store is away, the share paced alone)."""
    if not shared.together:
        return f"pacing alone at {shared.share:.0%} of it: the shared pace at {shared.where} does not answer"
    processes = f"{shared.members} process{'es' if shared.members != 1 else ''}"
    return f"shared by {processes}, {shared.share:.0%} here"


def _pace_parts(limiter: LimiterStats) -> list[str]:
    parts = []
    for pace, limit, unit in (
        (limiter.rpm_pace, limiter.rpm_limit, "rpm"),
        (limiter.tpm_pace, limiter.tpm_limit, "tpm"),
        (limiter.input_tpm_pace, limiter.input_tpm_limit, "input tpm"),
        (limiter.output_tpm_pace, limiter.output_tpm_limit, "output tpm"),
    ):
        if limit is not None:
            parts.append(f"{pace or limit:,.0f}/{limit:,.0f} {unit}")
        elif pace is not None:
            parts.append(f"{pace:,.0f} {unit} (learned from 429s)")
    return parts


def _notes(stats: EngineStats, *, live: bool = False) -> list[str]:
    """What is unusual now; the live view has a column for the waiting, and groups its digits."""
    notes = []
    if stats.limiter.waiting and not live:
        notes.append(f"{stats.limiter.waiting} waiting")
    if stats.limiter.cooling_for_s >= 0.05:  # what would read "cooling 0.0s" is over
        notes.append(f"cooling {stats.limiter.cooling_for_s:.1f}s")
    if stats.circuit_open:
        notes.append("provider failing: probing")
    if stats.cached:
        notes.append(f"{stats.cached:,} cached" if live else f"{stats.cached} cached")
    if stats.batch is not None:
        notes.append(stats.batch.states_text())
    return notes


def _eta_of(stats: EngineStats, remaining: int, per_s: float) -> str:
    """From the batches' own progress in a batch run (answers come a batch at a time), else from the pace."""
    if stats.batch is None or remaining <= 0:
        return _eta(remaining, per_s)
    eta_s = stats.batch.eta_s()
    return "?" if eta_s is None else _eta(remaining, remaining / eta_s if eta_s > 0 else math.inf)


def plain_line(stats: EngineStats, total: int | None, rates: tuple[float, float]) -> str:
    """One model's progress; `total` None for a fallback, which gets only what others fail."""
    per_s, tokens_per_s = rates
    done = f"{stats.done} done as a fallback" if total is None else f"{stats.done}/{total} done"
    eta = "" if total is None else f", ETA {_eta_of(stats, total - stats.done, per_s)}"
    notes = "".join(f", {note}" for note in _notes(stats))
    return (
        f"{stats.model}: {done} ({stats.succeeded} ok, {stats.failed} failed), "
        f"{stats.in_flight} in flight{notes}, {per_s:.1f} req/s, {tokens_per_s:.0f} tok/s, "
        f"pace {pace_text(stats.limiter)}, {stats.retries} retries, {stats.rate_limited} 429s{eta}"
    )


# -- the live view: cells first, then a layout for the width at hand -------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    key: str
    header: str
    label: str
    """How the value is introduced on the line beneath the row, where there is no header."""
    right: bool = True


MODEL, BAR = "model", "bar"
_COLUMNS = (
    _Column(MODEL, "model", "", right=False),
    _Column(BAR, "", "", right=False),
    _Column("done", "done", "done"),
    _Column("ok", "ok", "ok"),
    _Column("failed", "failed", "failed"),
    _Column("in_flight", "in flight", "in flight"),
    _Column("waiting", "waiting", "waiting"),
    _Column("req_s", "req/s", "req/s"),
    _Column("tok_s", "tok/s", "tok/s"),
    _Column("retries", "retries", "retries"),
    _Column("rate_limited", "429s", "429s"),
    _Column("pace", "pace/limit per min", "pace"),
    _Column("eta", "ETA", "ETA"),
)
_BY_KEY = {column.key: column for column in _COLUMNS}
_ESSENTIAL = ("done", "failed", "req_s", "eta")
"""Always in the row, besides the model: how far, what went wrong, how fast, how long still."""
_OPTIONAL = (BAR, "ok", "in_flight", "rate_limited", "tok_s", "waiting", "retries", "pace")
"""In the row when they fit, in this order of importance; beneath it otherwise."""
_GAP = 2
_SPACE = " " * _GAP
_INDENT = "  "
_BAR_WIDTH = 24
_MIN_BAR_WIDTH = 10


@dataclass(slots=True)
class Row:
    """One model's cells, as text: the layout only measures and places them."""

    model: str
    cells: dict[str, str]
    fraction: float | None
    """Of the total done, for the bar; None for a fallback, which has no total."""
    failed: bool = False
    notes: list[str] = field(default_factory=list)
    reserved: dict[str, int] = field(default_factory=dict)
    """Widths to keep for cells that grow, so the columns do not shift as the counts do."""


def row_of(stats: EngineStats, total: int | None, rates: tuple[float, float]) -> Row:
    per_s, tokens_per_s = rates
    cells = {
        "done": f"{stats.done:,} (fallback)" if total is None else f"{stats.done:,}/{total:,}",
        "ok": f"{stats.succeeded:,}",
        "failed": f"{stats.failed:,}",
        "in_flight": f"{stats.in_flight:,}",
        "waiting": f"{stats.limiter.waiting:,}",
        "req_s": f"{per_s:,.1f}",
        "tok_s": f"{tokens_per_s:,.0f}",
        "retries": f"{stats.retries:,}",
        "rate_limited": f"{stats.rate_limited:,}",
        "pace": pace_text(stats.limiter),
        "eta": "" if total is None else _eta_of(stats, total - stats.done, per_s),
    }
    fraction = None if total is None else (stats.done / total if total else 1.0)
    reserved = {} if total is None else {"done": len(f"{total:,}/{total:,}"), "ok": len(f"{total:,}"), "eta": 6}
    return Row(stats.model, cells, fraction, failed=stats.failed > 0, notes=_notes(stats, live=True), reserved=reserved)


@dataclass(frozen=True, slots=True)
class _Layout:
    in_row: tuple[str, ...]
    """Column keys in the row, in display order (the model's own line aside)."""
    widths: dict[str, int]
    name_apart: bool
    """The model's name on a line of its own, the row beneath it, indented."""


class View:
    """The live view, laid out when rendered, for the width and height the console has then."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = list(rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Text]:
        width = options.max_width
        layout = _layout(self.rows, width)
        details = [list(_packed(_beneath(row, layout), row.notes, width)) for row in self.rows]
        height = 1 + sum(1 + layout.name_apart + len(lines) for lines in details)
        if height > (options.height or options.size.height):
            # Too tall for the screen: the essentials alone, rather than the view cut off at the bottom.
            details = [list(_packed(_beneath(row, layout, _ESSENTIAL), [], width)) for row in self.rows]
        if layout.in_row:
            yield _header(layout)
        for row, lines in zip(self.rows, details, strict=True):
            yield from _row_lines(row, layout)
            yield from lines


def _width(row: Row, key: str) -> int:
    return len(row.model) if key == MODEL else max(len(row.cells.get(key, "")), row.reserved.get(key, 0))


def _layout(rows: Sequence[Row], width: int) -> _Layout:
    """The most that fits in `width`: the essentials, then optional columns in order of importance.

    Where the essentials do not fit beside the model's name, the name goes on a line of its own; where
    they do not fit even then, every value goes beneath the name, labelled, and there is no row.
    """
    widths = {c.key: max([len(c.header), *(_width(r, c.key) for r in rows)]) for c in _COLUMNS if c.key != BAR}
    essentials = sum(widths[k] + _GAP for k in _ESSENTIAL)
    name_apart = widths[MODEL] + essentials > width
    used = (len(_INDENT) - _GAP if name_apart else widths[MODEL]) + essentials
    if used > width:
        return _Layout((), widths, name_apart=True)
    chosen = set(_ESSENTIAL)
    for key in _OPTIONAL:
        need = _MIN_BAR_WIDTH if key == BAR else widths[key]
        if used + _GAP + need <= width:
            chosen.add(key)
            used += _GAP + need
    if BAR in chosen:
        widths[BAR] = min(_BAR_WIDTH, _MIN_BAR_WIDTH + width - used)
    keys = tuple(c.key for c in _COLUMNS if c.key in chosen or (c.key == MODEL and not name_apart))
    return _Layout(keys, widths, name_apart)


def _beneath(row: Row, layout: _Layout, only: Sequence[str] | None = None) -> list[str]:
    """What did not fit in the row, each with its label."""
    keys = [c.key for c in _COLUMNS if c.key not in layout.in_row and c.key not in (MODEL, BAR)]
    return [f"{_BY_KEY[key].label} {row.cells[key]}" for key in keys if only is None or key in only]


def _header(layout: _Layout) -> Text:
    from rich.text import Text

    cells = [_place(_BY_KEY[key].header, key, layout) for key in layout.in_row]
    return Text((_INDENT if layout.name_apart else "") + _SPACE.join(cells), style="bold", no_wrap=True)


def _place(text: str, key: str, layout: _Layout) -> str:
    width = layout.widths[key]
    return text.rjust(width) if _BY_KEY[key].right else text.ljust(width)


def _row_lines(row: Row, layout: _Layout) -> Iterator[Text]:
    from rich.text import Text

    if layout.name_apart:
        yield Text(row.model, style="bold", overflow="fold")  # only a name wider than the screen folds
    if not layout.in_row:
        return
    line = Text(_INDENT if layout.name_apart else "", no_wrap=True)
    for i, key in enumerate(layout.in_row):
        if i:
            line.append(_SPACE)
        if key == BAR:
            line.append_text(_bar(row.fraction, layout.widths[BAR]))
        else:
            style = "red" if key == "failed" and row.failed else ""
            line.append(_place(row.model if key == MODEL else row.cells[key], key, layout), style=style)
    yield line


def _bar(fraction: float | None, width: int) -> Text:
    from rich.text import Text

    if fraction is None:
        return Text(" " * width)
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return Text.assemble(("━" * filled, "bar.complete"), ("━" * (width - filled), "bar.back"))


def _packed(fields: list[str], notes: list[str], width: int) -> Iterator[Text]:
    """Labelled values on as few indented lines as hold them, each whole; notes in yellow."""
    from rich.text import Text

    room = width - len(_INDENT)
    pieces = [(piece, "") for text in fields for piece in _pieces(text, room)]
    line = Text(_INDENT, overflow="fold")
    for text, style in pieces + [(note, "yellow") for note in notes]:
        if len(line) > len(_INDENT) and len(line) + _GAP + len(text) > width:
            yield line
            line = Text(_INDENT, overflow="fold")
        if len(line) > len(_INDENT):
            line.append(_SPACE)
        line.append(text, style=style)
    if len(line) > len(_INDENT):
        yield line


def _pieces(text: str, room: int) -> list[str]:
    """A field longer than a line (the pace, on a narrow screen) breaks after its commas, not mid-number."""
    if len(text) <= room:
        return [text]
    parts = text.split(", ")
    return [part + "," for part in parts[:-1]] + parts[-1:]


class Progress:
    """Refreshes until stopped. Mode: 'live' (rich, on a terminal), 'plain' (a line every few seconds), 'quiet'."""

    def __init__(
        self,
        source: StatsSource,
        totals: Mapping[str, int],
        *,
        mode: str,
        stream: IO[str],
        plain_every_s: float = 5.0,
    ):
        """`totals`: what each model has to do. A model without one (a fallback, which gets only what the
        others fail) is shown without a total or an ETA."""
        self._source = source
        self._totals = totals
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

    def _total_of(self, stats: EngineStats) -> int | None:
        return self._totals.get(stats.model)

    async def _plain(self) -> None:
        while True:
            await asyncio.sleep(self._plain_every_s)
            for stats in self._source():
                print(plain_line(stats, self._total_of(stats), self._rates_of(stats)), file=self._stream, flush=True)

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

    def _render(self) -> View:
        return View([row_of(stats, self._total_of(stats), self._rates_of(stats)) for stats in self._source()])
