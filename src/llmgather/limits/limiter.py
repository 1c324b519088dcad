"""Admission for one endpoint and model: a request budget, a token budget, one shared cool-down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from llmgather.limits.bucket import TokenBucket

# Pace a little under the limit: providers enforce per-minute limits over short windows too (OpenAI
# quantizes to the second), and arrival times jitter on the way, so pacing at 100% trips the limit.
HEADROOM = 0.97
# How much may be saved up while idle, in seconds of rate: small, for the same reason.
BURST_S = 0.02


@dataclass(frozen=True, slots=True)
class Limits:
    """How hard one model may be driven. None means no limit of that kind."""

    concurrency: int = 50
    rpm: float | None = None
    tpm: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True, slots=True)
class LimiterStats:
    rpm_limit: float | None
    tpm_limit: float | None
    waiting: int
    cool_downs: int
    cooling_for_s: float


def _bucket(per_minute: float | None, clock: Callable[[], float]) -> TokenBucket | None:
    if per_minute is None:
        return None
    rate = per_minute / 60.0 * HEADROOM
    return TokenBucket(rate, max(1.0, rate * BURST_S), clock=clock)


class Limiter:
    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._rpm = rpm
        self._tpm = tpm
        self._requests = _bucket(rpm, clock)
        self._tokens = _bucket(tpm, clock)
        self._resume_at = 0.0
        self._waiting = 0
        self._cool_downs = 0

    @property
    def unlimited(self) -> bool:
        return self._requests is None and self._tokens is None and self._resume_at == 0.0

    async def admit(self, tokens: int) -> None:
        """Wait until one request of about `tokens` tokens may be sent."""
        if self.unlimited:
            return
        self._waiting += 1
        try:
            while True:
                await self._wait_out_cool_down()
                wait = self._book(tokens)
                if wait <= 0:
                    return
                try:
                    await self._sleep(wait)
                except BaseException:
                    self._unbook(tokens)
                    raise
                if self._clock() >= self._resume_at:
                    return
                # A 429 arrived while we waited: hand the booking back and queue behind the cool-down.
                self._unbook(tokens)
        finally:
            self._waiting -= 1

    def settle(self, estimated: int, actual: int) -> None:
        """Correct a token booking once the provider has said what the request really used."""
        if self._tokens is None or actual == estimated:
            return
        if actual < estimated:
            self._tokens.refund(estimated - actual)
        else:
            self._tokens.charge(actual - estimated)

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this endpoint and model until `seconds` from now (one shared wait)."""
        resume_at = self._clock() + seconds
        if resume_at > self._resume_at:
            if self._clock() >= self._resume_at:
                self._cool_downs += 1
            self._resume_at = resume_at

    def stats(self) -> LimiterStats:
        return LimiterStats(
            rpm_limit=self._rpm,
            tpm_limit=self._tpm,
            waiting=self._waiting,
            cool_downs=self._cool_downs,
            cooling_for_s=max(0.0, self._resume_at - self._clock()),
        )

    async def _wait_out_cool_down(self) -> None:
        while (remaining := self._resume_at - self._clock()) > 0:
            await self._sleep(remaining)

    def _book(self, tokens: int) -> float:
        wait = 0.0
        if self._requests is not None:
            wait = self._requests.reserve(1)
        if self._tokens is not None:
            wait = max(wait, self._tokens.reserve(tokens))
        return wait

    def _unbook(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.refund(1)
        if self._tokens is not None:
            self._tokens.refund(tokens)
