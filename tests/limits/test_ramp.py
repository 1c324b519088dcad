"""A fresh run ramps up: no opening burst, the whole rate within about a second, and nothing lost after that.

"Smooth" here: in no tenth of a second does more go than the whole rate allows in one (no burst, even at the
start, when the bucket of a run that ramped not would hold a quarter second's worth at once), the first
tenth of a second sends at most a tenth of what a second allows, and from the second second on the run goes
at the whole rate, so that the ramp costs at most about a quarter second of it in all.
"""

from __future__ import annotations

import asyncio

from test_bucket import FakeClock

from llmgather.limits import Cost, Limiter
from llmgather.limits.queue import HEADROOM, RAMP_S

PER_S = 100  # 6,000 rpm
NO_TOKENS = Cost()


def admitted_times(limiter: Limiter, clock: FakeClock, n: int, cost: Cost = NO_TOKENS) -> list[float]:
    """When each of `n` requests, all waiting from the start, was let go (seconds from the start)."""
    start = clock.now
    times: list[float] = []

    async def scenario() -> None:
        async def one() -> None:
            await limiter.known()
            await limiter.admit(cost)
            times.append(clock.now - start)

        await asyncio.gather(*(one() for _ in range(n)))

    asyncio.run(scenario())
    return times


def per_tenth(times: list[float], until_s: float) -> list[int]:
    return [sum(1 for t in times if k / 10 <= t < (k + 1) / 10) for k in range(round(until_s * 10))]


def test_a_fresh_run_opens_without_a_burst_and_reaches_the_whole_rate() -> None:
    clock = FakeClock()
    times = admitted_times(Limiter(rpm=PER_S * 60, clock=clock, sleep=clock.sleep), clock, 600)
    tenths = per_tenth(times, 6.0)
    assert tenths[0] <= PER_S / 10  # without the ramp a quarter second's worth went in the first instant
    assert max(tenths) <= PER_S / 10 + 1
    assert tenths[1:5] == sorted(tenths[1:5])  # rising through the first half second
    assert sum(tenths[5:50]) >= 4.5 * PER_S * HEADROOM - 2  # the whole rate from then on
    assert max(times) <= 600 / (PER_S * HEADROOM) + RAMP_S / 2 + 0.1


def test_without_the_ramp_the_run_opens_with_a_burst() -> None:
    # What the ramp is for: the bucket's saved-up quarter second goes in the first instant.
    clock = FakeClock()
    times = admitted_times(Limiter(rpm=PER_S * 60, ramp=False, clock=clock, sleep=clock.sleep), clock, 100)
    assert sum(1 for t in times if t == 0.0) >= PER_S / 4 - 1


def test_a_token_limit_ramps_up_alike() -> None:
    # 60,000 tokens a minute (1,000 a second), 50 tokens a request: 20 a second at the whole rate.
    clock = FakeClock()
    limiter = Limiter(tpm=60_000, clock=clock, sleep=clock.sleep)
    times = admitted_times(limiter, clock, 120, Cost(40, 10))
    tenths = per_tenth(times, 5.0)
    assert tenths[0] <= 2
    assert max(tenths) <= 3
    assert sum(tenths[10:50]) >= 4 * 20 * HEADROOM - 2
