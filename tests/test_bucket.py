"""The token bucket and limiter on a fake clock: no real time passes."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from llmgather.limits import Limiter, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=500),
    capacity=st.floats(min_value=1, max_value=50),
    arrivals=st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.integers(min_value=1, max_value=20)),
        min_size=1,
        max_size=80,
    ),
    window=st.floats(min_value=0.1, max_value=5),
)
def test_admitted_amount_never_exceeds_rate_times_window_plus_one_burst(
    rate: float, capacity: float, arrivals: list[tuple[float, int]], window: float
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock=clock)
    admitted: list[tuple[float, int]] = []
    for gap, amount in arrivals:
        clock.now += gap
        admitted.append((clock.now + bucket.reserve(amount), amount))
    admitted.sort()
    for start, _ in admitted:
        inside = sum(a for t, a in admitted if start <= t < start + window)
        biggest = max(a for _, a in admitted)
        assert inside <= rate * window + max(capacity, biggest) + 1e-6


@settings(max_examples=100, deadline=None)
@given(amounts=st.lists(st.integers(min_value=1, max_value=30), min_size=2, max_size=40))
def test_waiters_are_admitted_in_order_and_as_soon_as_the_bucket_allows(amounts: list[int]) -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 5.0, clock=clock)
    ready_times = [bucket.reserve(a) for a in amounts]
    assert ready_times == sorted(ready_times)
    debt = 5.0
    for amount, wait in zip(amounts, ready_times, strict=True):
        debt -= amount
        assert abs(wait - max(0.0, -debt / 10.0)) < 1e-9


def test_a_request_larger_than_the_bucket_waits_for_it_to_refill() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, 10.0, clock=clock)
    assert bucket.reserve(1000) == (1000 - 10) / 100.0


def test_refunds_let_later_requests_in_sooner() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 10.0, clock=clock)
    assert bucket.reserve(30) == 2.0
    bucket.refund(20)
    assert bucket.reserve(1) == 0.1


def test_limiter_paces_requests_at_the_rpm_under_the_headroom() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=600, clock=clock, sleep=clock.sleep)

    async def admit_all() -> list[float]:
        times = []
        for _ in range(100):
            await limiter.admit(0)
            times.append(clock.now)
        return times

    times = asyncio.run(admit_all())
    span = times[-1] - times[0]
    assert 99 / 10.0 <= span <= 99 / (10.0 * 0.95)


def test_a_cool_down_holds_every_request_until_it_passes() -> None:
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    limiter.cool_down(3.0)
    start = clock.now

    async def admit() -> float:
        await limiter.admit(0)
        return clock.now

    assert asyncio.run(admit()) >= start + 3.0
    assert limiter.stats().cool_downs == 1
