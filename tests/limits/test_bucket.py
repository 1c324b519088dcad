"""The token bucket and limiter on a fake clock: no real time passes."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from llmgather.limits import Cost, Limiter, TokenBucket
from llmgather.limits.queue import ARRIVAL_SLACK_S, HEADROOM


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        for _ in range(5):  # everyone ready now runs at the present time, as with a real clock
            await asyncio.sleep(0)
        self.now += max(0.0, seconds)


def admit_in_order(bucket: TokenBucket, clock: FakeClock, arrivals: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """FIFO admission as the limiter does it: each request goes once the bucket covers it."""
    admitted = []
    for gap, amount in arrivals:
        clock.now += gap
        clock.now += bucket.wait_for(amount)
        bucket.take(amount)
        admitted.append((clock.now, amount))
    return admitted


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
    refund_share=st.floats(min_value=0, max_value=0.9),
)
def test_admitted_amount_never_exceeds_rate_times_window_plus_one_burst(
    rate: float, capacity: float, arrivals: list[tuple[float, int]], window: float, refund_share: float
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock=clock)
    admitted = []
    for gap, amount in arrivals:
        [(at, _)] = admit_in_order(bucket, clock, [(gap, amount)])
        used = amount * (1 - refund_share)
        bucket.refund(amount - used)  # an over-estimate settled as soon as the answer is back
        admitted.append((at, used))
    biggest = max(a for _, a in arrivals)  # one indivisible request can be larger than any window's share
    for start, _ in admitted:
        inside = sum(a for t, a in admitted if start <= t < start + window)
        assert inside <= rate * window + max(capacity, biggest) + 1e-6


def test_waiters_are_admitted_in_order_at_the_pace_and_never_over_the_second() -> None:
    clock = FakeClock()
    # The steady pace, without a fresh run's ramp (tests/limits/test_ramp.py).
    limiter = Limiter(rpm=600, learn=False, ramp=False, clock=clock, sleep=clock.sleep)
    order: list[tuple[int, float]] = []

    async def scenario() -> None:
        async def one(n: int) -> None:
            await limiter.admit(Cost())
            order.append((n, clock.now))

        await asyncio.gather(*(one(n) for n in range(60)))

    asyncio.run(scenario())
    assert [n for n, _ in order] == list(range(60))
    times = [t for _, t in order]
    rate = 600 / 60 * HEADROOM
    assert (59 - 10) / rate <= times[-1] - times[0] <= 59 / rate  # the pace, less at most one second's burst
    assert all(b >= a for a, b in itertools.pairwise(times))
    for start in times:
        assert sum(1 for t in times if start <= t < start + 1.0 + ARRIVAL_SLACK_S) <= 10


def test_a_request_larger_than_the_bucket_waits_until_it_is_covered() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, 10.0, clock=clock)
    assert bucket.wait_for(1000) == (1000 - 10) / 100.0
    clock.now += 9.9
    assert bucket.wait_for(1000) == 0.0
    bucket.take(1000)
    assert abs(bucket.level()) < 1e-9


def test_a_waiter_let_in_late_loses_nothing_to_the_cap() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, 10.0, clock=clock)
    bucket.take(10)
    assert bucket.wait_for(50) == 0.5
    clock.now += 0.55  # the waker was 50 ms late
    bucket.take(50)
    assert abs(bucket.wait_for(50) - 0.45) < 1e-9  # the next one is due as if the first had gone on time


def test_refunds_let_the_next_request_in_sooner() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 10.0, clock=clock)
    bucket.take(10)
    assert bucket.wait_for(5) == 0.5
    bucket.refund(3)
    assert abs(bucket.wait_for(5) - 0.2) < 1e-9


def test_limiter_paces_requests_at_the_rpm_under_the_headroom() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=600, ramp=False, clock=clock, sleep=clock.sleep)  # the steady pace, without the ramp

    async def admit_all() -> list[float]:
        times = []
        for _ in range(100):
            await limiter.admit(Cost())
            times.append(clock.now)
        return times

    times = asyncio.run(admit_all())
    span = times[-1] - times[0]
    assert 90 / 10.0 <= span <= 99 / (10.0 * 0.95)


def test_a_request_refused_with_a_429_keeps_its_place_in_the_pace() -> None:
    # 600 rpm with a quarter-second burst: 2.5 requests at once, then one every 0.1 s.
    async def second_admission_wait(rate_limited: bool) -> float:
        clock = FakeClock()
        limiter = Limiter(rpm=600, learn=False, clock=clock, sleep=clock.sleep)
        for _ in range(2):
            await limiter.admit(Cost())
        refused = await limiter.admit(Cost())
        limiter.settle(refused, None, rate_limited=rate_limited)
        start = clock.now
        await limiter.admit(Cost())
        return clock.now - start

    assert asyncio.run(second_admission_wait(rate_limited=False)) == 0.0  # a dropped connection: given back
    assert asyncio.run(second_admission_wait(rate_limited=True)) > 0.05  # a 429: not sent again at once


def test_a_cool_down_holds_every_request_until_it_passes() -> None:
    clock = FakeClock()
    limiter = Limiter(learn=False, clock=clock, sleep=clock.sleep)
    limiter.cool_down(3.0)
    start = clock.now

    async def admit() -> float:
        await limiter.admit(Cost())
        return clock.now

    assert asyncio.run(admit()) >= start + 3.0
    assert limiter.stats().cool_downs == 1


def test_a_cancelled_waiter_leaves_no_waker_behind() -> None:
    async def scenario() -> None:
        limiter = Limiter(rpm=6, learn=False)
        await limiter.admit(Cost())
        waiter = asyncio.create_task(limiter.admit(Cost()))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        await asyncio.sleep(0)
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        assert limiter.stats().waiting == 0

    asyncio.run(scenario())


def test_a_request_sent_after_its_admission_is_counted_from_when_it_went() -> None:
    from llmgather.limits.window import SlidingWindow

    clock = FakeClock()
    window = SlidingWindow(2, span_s=1.0, clock=clock)
    late = window.add(1)
    window.add(1)
    clock.now += 0.5
    window.touch(late)  # admitted at 0, but the busy event loop let it go only at 0.5
    clock.now += 0.1
    assert abs(window.wait_for(1) - 0.9) < 1e-9  # until the late one leaves the provider's second
    clock.now += 0.6  # the on-time one has left, but the log never counts fewer than the provider does
    assert window.wait_for(1) > 0
    clock.now += 0.3  # and once the late one has left too, both are gone
    assert window.wait_for(2) == 0.0 and window.total() == 0
