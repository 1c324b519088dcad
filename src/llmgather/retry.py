"""When to try again, and how long to wait first."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from llmgather.errors import ConnectError, TransientError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, never shorter than the provider's Retry-After.

    Before attempt n+1 (n failed attempts so far) the wait is

        max(retry_after, uniform(0, min(max_wait_s, base_s * 2 ** (n - 1))) - attempt_s)

    so backoff spaces the starts of attempts: time the failed attempt already took (a whole timeout,
    say) counts towards it. The first retry after a dropped connection goes at once: a drop does not
    say the provider wants us to slow down.
    Only transient errors are retried; at most `max_retries` times, and never past `deadline_s` counted from
    when the request first waits to be sent. The engine bounds every other wait by the same deadline (admission,
    the circuit breaker, the attempt itself). `RetryPolicy.testing()` keeps the rules but drops the waits.
    """

    max_retries: int = 5
    base_s: float = 0.25
    max_wait_s: float = 30.0
    deadline_s: float | None = 600.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ValueError("deadline_s must be positive")

    @classmethod
    def testing(cls, max_retries: int = 5) -> RetryPolicy:
        return cls(max_retries=max_retries, base_s=0.0, max_wait_s=0.0)

    def next_wait(
        self, error: BaseException, failed_attempts: int, elapsed_s: float, rng: random.Random, attempt_s: float = 0.0
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up with `error`."""
        if not isinstance(error, TransientError) or failed_attempts > self.max_retries:
            return None
        ceiling = min(self.max_wait_s, self.base_s * 2 ** (failed_attempts - 1))
        if failed_attempts == 1 and isinstance(error, ConnectError):
            ceiling = 0.0
        wait = max(0.0, rng.uniform(0.0, ceiling) - attempt_s) if ceiling > 0 else 0.0
        if error.retry_after is not None:
            wait = max(wait, error.retry_after)
        if self.deadline_s is not None and elapsed_s + wait >= self.deadline_s:
            return None
        return wait


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asked us to wait: `retry-after-ms`, else `retry-after` in seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_duration(value: object) -> float | None:
    """Seconds in a protobuf Duration as JSON spells it ("23s", "1.5s"): Google's `RetryInfo.retryDelay`."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
