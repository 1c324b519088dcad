"""A circuit breaker: when the provider is down, stop sending the queue into it and probe instead.

While most recent attempts fail with a server error, a dropped connection or a timeout, the breaker
opens: nothing is admitted for a pause, then one request goes as a probe. Its success closes the
breaker; its failure opens it again for twice as long (up to a ceiling). An outage then costs a few
probes, not every queued request's retries.

"Recent" is by when an attempt was sent, not when it ended: on a busy machine, answers to attempts sent
before an outage arrive among its first failures, and remembered in the order they end they would hold the
breaker closed while a second wave of requests goes into the outage.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Awaitable, Callable

from llmgather.errors import RequestError

WINDOW = 20
"""Attempts remembered."""
OPEN_WHEN_FAILED = 0.8
"""Share of remembered attempts that failed with an outage's errors that opens the breaker."""
FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 30.0


class CircuitBreaker:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._recent: list[tuple[int, bool]] = []
        """The latest-sent attempts that ended, by number: True if it failed as in an outage."""
        self._failed = 0
        """How many of `_recent` failed."""
        self._sent = 0
        self._open_until: float | None = None
        self._opened_at = math.inf
        self._pause_s = FIRST_PAUSE_S
        self._probing = False
        self._probe_done = asyncio.Event()
        self.openings = 0
        self.last_outage: RequestError | None = None
        """The error of the latest attempt that failed as in an outage: what a request not sent is told."""

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    @property
    def reopens_at(self) -> float:
        """When the next probe may go (in the past while one is out); infinity while the breaker is closed."""
        return self._open_until if self._open_until is not None else math.inf

    @property
    def open_since(self) -> float:
        """When the breaker opened and has stayed open since (every probe failing); infinity while closed."""
        return self._opened_at

    @property
    def probe_due(self) -> bool:
        """Open, its pause over and no probe out: the next to come goes as the probe."""
        return self._open_until is not None and not self._probing and self._open_until <= self._clock()

    def number(self) -> int:
        """An attempt goes: its number, to give back to `record`."""
        self._sent += 1
        return self._sent

    async def admit(self) -> bool:
        """Wait while the breaker is open; after the pause, one caller goes as the probe (True), the rest wait."""
        while self._open_until is not None:
            wait = self._open_until - self._clock()
            if wait > 0:
                await self._sleep(wait)
                continue
            if not self._probing:
                self._probing = True
                self._probe_done.clear()
                return True
            await self._probe_done.wait()
        return False

    def record(self, *, outage: RequestError | None, probe: bool, attempt: int) -> None:
        """An attempt ended: `outage` is its error when it failed as a down provider does (5xx, connection,
        timeout), None when it was answered. `attempt` is its number from `number`."""
        if outage is not None:
            self.last_outage = outage
        if probe:
            self._probing = False
            self._probe_done.set()
            if outage is not None:
                self._pause_s = min(self._pause_s * 2, LONGEST_PAUSE_S)
                self._open_until = self._clock() + self._pause_s
            else:
                self._close()
            return
        if self._open_until is not None:
            return  # in flight before the breaker opened: already counted in
        recent = self._recent
        if len(recent) == WINDOW and attempt < recent[0][0]:
            return  # sent before every attempt remembered
        failed = outage is not None
        bisect.insort(recent, (attempt, failed))
        self._failed += failed
        if len(recent) > WINDOW:
            self._failed -= recent.pop(0)[1]
        if len(recent) == WINDOW and self._failed >= OPEN_WHEN_FAILED * WINDOW:
            self.openings += 1
            self._opened_at = self._clock()
            self._open_until = self._opened_at + self._pause_s

    def abandon(self, *, probe: bool) -> None:
        """An admitted attempt was cancelled before it said anything: let another be the probe."""
        if probe:
            self._probing = False
            self._probe_done.set()

    def _close(self) -> None:
        self._open_until = None
        self._opened_at = math.inf
        self._pause_s = FIRST_PAUSE_S
        self._recent.clear()
        self._failed = 0
