"""Chart axes that read at a glance: from 0 to the first round tick at or past the data, ticks a step of 1, 2
or 5 times a power of ten apart (0, 0.5, 1, 1.5; never 0.13, 0.27, 0.84), labelled without float noise
(0.3, never 0.30000000000000004)."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_INTERVALS = 6
"""At most this many steps from 0 to the top: enough ticks to read a value off, few enough to read them."""


@dataclass(frozen=True, slots=True)
class Axis:
    step: float
    intervals: int
    decimals: int
    """Places after the point that the step needs (0.05 -> 2): labels show no more, and no trailing zero."""

    @property
    def top(self) -> float:
        return self.step * self.intervals

    def ticks(self) -> list[float]:
        return [self.step * i for i in range(self.intervals + 1)]

    def label(self, value: float) -> str:
        text = f"{value:,.{self.decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text


def axis_for(top: float, *, whole: bool = False) -> Axis:
    """The axis with the smallest round step that reaches `top` in at most MAX_INTERVALS steps; `whole` for
    counts, whose step is never below 1."""
    if not (top > 0 and math.isfinite(top)):
        return Axis(1.0, 1, 0)
    power = math.floor(math.log10(top / MAX_INTERVALS))
    while True:
        for mantissa in (1, 2, 5):
            step = float(f"{mantissa}e{power}")  # from its decimal form: 2e-1 is 0.2, where 2 * 10**-1 may not be
            # A hair's tolerance: 0.6 / 0.1 is 5.999..., and 0.1 * 3 is 0.30000000000000004.
            intervals = max(1, math.ceil(top / step - 1e-9))
            if intervals <= MAX_INTERVALS and (step >= 1 or not whole):
                return Axis(step, intervals, max(0, -power))
        power += 1
