"""Latency percentiles in fixed memory: a run of a million requests keeps a few kilobytes, not a list.

The same histogram holds any positive figure from 0.0001 to 86,400 to within 1%: `compare` keeps each model's
output tokens per second in one too."""

from __future__ import annotations

import math

_SMALLEST_S = 1e-4
_RATIO = 1.01  # each bucket 1% wider than the last: percentiles within 1%
_LOG_RATIO = math.log(_RATIO)
_BUCKETS = int(math.log(24 * 3600 / _SMALLEST_S) / _LOG_RATIO) + 2


class LatencyHistogram:
    __slots__ = ("_counts", "_max", "count", "total_s")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total_s = 0.0
        self._max = 0.0

    def add(self, seconds: float) -> None:
        index = (
            0 if seconds <= _SMALLEST_S else min(_BUCKETS - 1, 1 + int(math.log(seconds / _SMALLEST_S) / _LOG_RATIO))
        )
        self._counts[index] += 1
        self.count += 1
        self.total_s += seconds
        self._max = max(self._max, seconds)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0 < q <= 100): its bucket's upper edge, within 1% above the true value."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for index, bucket_count in enumerate(self._counts):
            seen += bucket_count
            if seen >= rank:
                return min(self._max, _SMALLEST_S * _RATIO**index)
        return self._max
