"""A sliding window of what was admitted: the exact form of a provider's per-second quantization.

A token bucket alone lets `rate + the largest request` through in some second, because the request that
opens the second was saved up for before it. Providers count every request against the window it arrives
in, so the limiter also keeps this log and admits a request only when the last second has room for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class WindowEntry:
    __slots__ = ("amount", "at")

    def __init__(self, at: float, amount: float) -> None:
        self.at = at
        self.amount = amount


class SlidingWindow:
    __slots__ = ("_clock", "_entries", "_total", "limit", "span_s")

    def __init__(self, limit: float, *, span_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.span_s = span_s
        self._clock = clock
        self._entries: deque[WindowEntry] = deque()
        self._total = 0.0

    def total(self) -> float:
        self._expire(self._clock())
        return self._total

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` more fits (0.0: now). An amount above the whole limit fits an empty window."""
        now = self._clock()
        self._expire(now)
        excess = self._total + min(amount, self.limit) - self.limit
        if excess <= 1e-9 * self.limit:
            return 0.0
        freed, latest = 0.0, 0.0
        for entry in self._entries:
            freed += entry.amount
            latest = max(latest, entry.at)  # a touched entry leaves no sooner than any behind it
            if freed >= excess:
                return max(0.0, latest + self.span_s - now)
        return self.span_s

    def add(self, amount: float) -> WindowEntry:
        entry = WindowEntry(self._clock(), amount)
        self._entries.append(entry)
        self._total += amount
        return entry

    def touch(self, entry: WindowEntry) -> None:
        """The request is leaving only now: count it from now. Entries stay in the log in admission order,
        and one that is touched holds back those behind it until it leaves: never too few counted."""
        entry.at = max(entry.at, self._clock())

    def correct(self, entry: WindowEntry, amount: float) -> None:
        """What the provider really counted for an admitted request (0 for one it refused)."""
        now = self._clock()
        self._expire(now)
        if entry.at > now - self.span_s:  # still counted in the window
            self._total += amount - entry.amount
        entry.amount = amount

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0].at <= now - self.span_s:
            self._total -= entries.popleft().amount
