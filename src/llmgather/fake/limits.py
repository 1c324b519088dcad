"""The fake provider's limits: requests, tokens, input tokens and output tokens, counted as providers do.

Each limit is enforced over a sliding minute and, quantized, over every second (limit/60 a second), as
OpenAI and Anthropic both do; or, with `clock_minute`, over fixed clock minutes with no quantization, as
LiteLLM Proxy does. Output tokens are reserved at `max_tokens` on admission and corrected to what the
answer really used (Anthropic's documented way), so an entry's amount can change while it is counted.
`Peaks` measures what was admitted, limited or not, so a test can check a client held a limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass


class _Entry:
    __slots__ = ("amount", "live", "stamp")

    def __init__(self, stamp: float, amount: int) -> None:
        self.stamp = stamp
        self.amount = amount
        self.live = True


class _Window:
    """Amounts admitted over the last `span_s` seconds."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.entries: deque[_Entry] = deque()
        self.total = 0

    def expire(self, now: float) -> None:
        while self.entries and self.entries[0].stamp <= now - self.span_s:
            entry = self.entries.popleft()
            entry.live = False
            self.total -= entry.amount

    def seconds_until_room(self, now: float, amount: int, limit: int) -> float:
        """How long until `amount` more fits under `limit` (0.0 if it fits now)."""
        excess = self.total + amount - limit
        if excess <= 0:
            return 0.0
        freed = 0
        for entry in self.entries:
            freed += entry.amount
            if freed >= excess:
                return entry.stamp + self.span_s - now
        return self.span_s

    def add(self, now: float, amount: int) -> _Entry:
        entry = _Entry(now, amount)
        self.entries.append(entry)
        self.total += amount
        return entry

    def correct(self, entry: _Entry, amount: int) -> None:
        if entry.live:
            self.total += amount - entry.amount
        entry.amount = amount


class _Sliding:
    """A per-minute limit over a sliding minute and, quantized, over every second."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.per_second = max(1, -(-per_minute // 60))
        self.minute = _Window(60.0)
        self.second = _Window(1.0)

    def check(self, now: float, amount: int) -> float:
        self.minute.expire(now)
        self.second.expire(now)
        return max(
            self.minute.seconds_until_room(now, amount, self.per_minute),
            # One request larger than a second's share still passes when the second is empty.
            self.second.seconds_until_room(now, min(amount, self.per_second), self.per_second),
        )

    def add(self, now: float, amount: int) -> tuple[_Entry, ...]:
        return (self.minute.add(now, amount), self.second.add(now, amount))

    def correct(self, entries: tuple[_Entry, ...], amount: int) -> None:
        self.minute.correct(entries[0], amount)
        self.second.correct(entries[1], amount)

    def remaining(self, now: float) -> int:
        self.minute.expire(now)
        return max(0, self.per_minute - self.minute.total)

    def reset_s(self, now: float) -> float:
        """Seconds until the minute is fully replenished."""
        self.minute.expire(now)
        if not self.minute.entries:
            return 0.0
        return max(0.0, self.minute.entries[-1].stamp + 60.0 - now)


class _ClockMinute:
    """A per-minute limit over fixed clock minutes: all of it is back when the wall clock's minute turns."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.minute_index = -1
        self.total = 0

    def _roll(self) -> float:
        wall = time.time()
        index = int(wall // 60)
        if index != self.minute_index:
            self.minute_index, self.total = index, 0
        return (index + 1) * 60 - wall

    def check(self, now: float, amount: int) -> float:
        left_s = self._roll()
        return 0.0 if self.total + amount <= self.per_minute else left_s

    def add(self, now: float, amount: int) -> tuple[_Entry, ...]:
        self._roll()
        self.total += amount
        return (_Entry(self.minute_index, amount),)

    def correct(self, entries: tuple[_Entry, ...], amount: int) -> None:
        # An amount of a minute that is over is forgotten with its minute.
        if entries[0].stamp == self.minute_index:
            self.total += amount - entries[0].amount
        entries[0].amount = amount

    def remaining(self, now: float) -> int:
        self._roll()
        return max(0, self.per_minute - self.total)

    def reset_s(self, now: float) -> float:
        return self._roll()


Limit = _Sliding | _ClockMinute


def _limit(per_minute: int | None, clock_minute: bool) -> Limit | None:
    if not per_minute:
        return None
    return _ClockMinute(per_minute) if clock_minute else _Sliding(per_minute)


@dataclass(slots=True)
class LimitState:
    """What a rate-limit header says of one limit."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(slots=True)
class Ticket:
    """What an admitted request holds, to correct its output tokens when it is done."""

    reserved: int
    output: tuple[_Entry, ...] | None
    measured: tuple[_Entry, ...]


class Budgets:
    """The four limits a request must fit: requests, tokens (input + output), input and output tokens."""

    NAMES = ("requests", "tokens", "input-tokens", "output-tokens")

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        input_tpm: int | None,
        output_tpm: int | None,
        clock_minute: bool = False,
    ) -> None:
        self.clock_minute = clock_minute
        self.limits: dict[str, Limit | None] = {
            "requests": _limit(rpm, clock_minute),
            "tokens": _limit(tpm, clock_minute),
            "input-tokens": _limit(input_tpm, clock_minute),
            "output-tokens": _limit(output_tpm, clock_minute),
        }
        self.peaks = Peaks()

    def admit(self, input_tokens: int, output_tokens: int) -> Ticket | tuple[float, str]:
        """A ticket, or how long until the request fits and the name of the limit it is over."""
        now = time.monotonic()
        amounts = {
            "requests": 1,
            "tokens": input_tokens + output_tokens,
            "input-tokens": input_tokens,
            "output-tokens": output_tokens,
        }
        wait, over = 0.0, ""
        for name, limit in self.limits.items():
            if limit is not None and (need := limit.check(now, amounts[name])) > wait:
                wait, over = need, name
        if wait > 0:
            return wait, over
        held: dict[str, tuple[_Entry, ...]] = {}
        for name, limit in self.limits.items():
            if limit is not None:
                held[name] = limit.add(now, amounts[name])
        return Ticket(output_tokens, held.get("output-tokens"), self.peaks.add(now, input_tokens, output_tokens))

    def settle(self, ticket: Ticket, output_tokens: int) -> None:
        """Count the output tokens really used in place of those reserved."""
        if output_tokens == ticket.reserved:
            return
        limit = self.limits["output-tokens"]
        if limit is not None and ticket.output is not None:
            limit.correct(ticket.output, output_tokens)
        self.peaks.correct(ticket.measured, output_tokens)
        ticket.reserved = output_tokens

    def states(self) -> dict[str, LimitState]:
        """The state of each limit that is set, by name."""
        now = time.monotonic()
        states = {}
        for name, limit in self.limits.items():
            if limit is not None:
                states[name] = LimitState(limit.per_minute, limit.remaining(now), limit.reset_s(now))
        return states


class Peaks:
    """The most requests, input and output tokens admitted in any second and any minute (sliding)."""

    def __init__(self) -> None:
        self.windows = {
            (kind, span): _Window(seconds)
            for kind in ("requests", "input_tokens", "output_tokens")
            for span, seconds in (("second", 1.0), ("minute", 60.0))
        }
        self.peak = dict.fromkeys(self.windows, 0)

    def add(self, now: float, input_tokens: int, output_tokens: int) -> tuple[_Entry, ...]:
        amounts = {"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens}
        output_entries = []
        for key, window in self.windows.items():
            window.expire(now)
            entry = window.add(now, amounts[key[0]])
            self.peak[key] = max(self.peak[key], window.total)
            if key[0] == "output_tokens":
                output_entries.append(entry)
        return tuple(output_entries)

    def correct(self, entries: tuple[_Entry, ...], amount: int) -> None:
        for span, entry in zip(("second", "minute"), entries, strict=True):
            self.windows[("output_tokens", span)].correct(entry, amount)

    def to_dict(self) -> dict[str, int]:
        return {f"peak_{kind}_per_{span}": value for (kind, span), value in self.peak.items()}


def rfc3339_after(seconds: float) -> str:
    """The UTC time `seconds` from now, rounded up to a whole second: Anthropic's reset stamps."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(time.time() + seconds)))
