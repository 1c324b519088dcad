"""Learning limits, on a fake clock: headers, AIMD, the first answer, one step down per burst of 429s."""

from __future__ import annotations

import asyncio

import pytest
from test_bucket import FakeClock

from llmgather.limits import Cost, Limiter
from llmgather.limits.adaptive import (
    DECREASE,
    DECREASE_UNDER_CEILING,
    DEEPEST_DECREASE,
    Aimd,
    AnswerShare,
)
from llmgather.limits.headers import Kind, announced
from llmgather.limits.learning import INITIAL_WINDOW, LONE_HOLD_S

OPENAI = {
    "x-ratelimit-limit-requests": "6000",
    "x-ratelimit-limit-tokens": "400000",
    "x-ratelimit-remaining-requests": "5999",
    "x-ratelimit-reset-requests": "10ms",
}


def limits_of(headers: dict[str, str]) -> dict[Kind, float | None]:
    return {kind: seen.limit for kind, seen in announced(headers, 0.0).items()}


def test_limits_are_read_from_openai_and_anthropic_headers() -> None:
    assert limits_of(OPENAI) == {Kind.REQUESTS: 6000.0, Kind.TOKENS: 400000.0}
    anthropic = {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-input-tokens-limit": "40000"}
    # Anthropic's input-tokens limit is its own budget, not the combined one (it was read as `tpm`).
    assert limits_of(anthropic) == {Kind.REQUESTS: 50.0, Kind.INPUT: 40000.0}
    assert limits_of({"content-type": "application/json"}) == {}
    assert not any(limits_of({"x-ratelimit-limit-requests": "lots"}).values())


def test_the_user_limit_is_a_ceiling_learning_never_exceeds() -> None:
    rate = Aimd(user_limit=1000)
    rate.learn(6000)
    assert rate.rate == 1000
    for _ in range(100):
        rate.increase(clean_s=1.0)
    assert rate.rate == 1000
    rate.learn(500)
    assert rate.rate == 500 and rate.ceiling == 500


def test_a_429_steps_down_and_clean_seconds_climb_back_to_the_ceiling() -> None:
    rate = Aimd(user_limit=None)
    rate.learn(6000)
    rate.decrease(observed_per_minute=0)
    assert rate.rate == 6000 * DECREASE_UNDER_CEILING
    rate.increase(clean_s=0.5)
    assert rate.rate is not None and 6000 * DECREASE_UNDER_CEILING < rate.rate < 6000
    rate.increase(clean_s=0.5)
    assert rate.rate == 6000


def test_once_the_limit_is_shown_to_be_shared_the_climb_back_starts_slowly_and_speeds_up() -> None:
    rate = Aimd(user_limit=None)
    rate.learn(6000)
    rate.decrease(observed_per_minute=0, accepted_share=0.5)  # half the answers were 429s
    assert rate.shared and rate.rate == 3000
    rate.increase(clean_s=1, since_decrease_s=1)
    first_second = rate.rate - 3000
    assert 0 < first_second < 6000 * 0.02  # about 1% of the ceiling a second, not 10%
    climbed = rate.rate
    rate.increase(clean_s=1, since_decrease_s=8)
    assert rate.rate - climbed > 8 * first_second  # doubling every two seconds
    for second in range(9, 30):
        rate.increase(clean_s=1, since_decrease_s=second)
    assert rate.rate == 6000 and not rate.shared


def test_when_most_answers_are_429s_the_rate_steps_down_to_the_share_that_got_through() -> None:
    rate = Aimd(user_limit=None)
    rate.learn(6000)
    rate.decrease(observed_per_minute=0, accepted_share=0.7)
    assert rate.rate == 6000 * 0.7
    rate.decrease(observed_per_minute=0, accepted_share=0.1)  # never more than halved at once
    assert rate.rate == 6000 * 0.7 * DEEPEST_DECREASE
    rate.decrease(observed_per_minute=0, accepted_share=0.99)  # a few 429s among many: the usual small step
    assert rate.rate == 6000 * 0.7 * DEEPEST_DECREASE * DECREASE_UNDER_CEILING


def test_the_answer_share_counts_the_current_and_previous_second() -> None:
    share = AnswerShare()
    for i in range(6):
        share.add(10.1 + i / 100, refused=False)
    assert share.accepted() is None  # too few to say
    for _ in range(4):
        share.add(11.5, refused=True)
    assert share.accepted() == 0.6
    for _ in range(6):
        share.add(12.0, refused=True)  # second 10 has left the count
    assert share.accepted() == 0.0
    share.add(20.0, refused=False)  # a gap: nothing before counts
    assert share.accepted() is None


def test_with_nothing_known_a_429_starts_pacing_below_what_was_sent() -> None:
    rate = Aimd(user_limit=None)
    assert rate.rate is None
    rate.decrease(observed_per_minute=3000)
    assert rate.rate == 3000 * DECREASE


def test_until_the_first_answer_only_the_initial_window_goes() -> None:
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)
    admitted: list[int] = []

    async def scenario() -> None:
        async def one(n: int) -> None:
            await limiter.known()
            await limiter.admit(Cost())
            admitted.append(n)

        tasks = [asyncio.create_task(one(n)) for n in range(INITIAL_WINDOW + 5)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert admitted == list(range(INITIAL_WINDOW))
        limiter.observe(OPENAI, ok=True)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert sorted(admitted) == list(range(INITIAL_WINDOW + 5))
    assert limiter.stats().rpm_limit == 6000 and limiter.stats().tpm_limit == 400000
    assert limiter.counts_tokens


def test_a_limit_learned_counts_what_went_before_it_was_known() -> None:
    # 20 went blind in the first instant; the answer says 600 rpm, 10 a second: the provider has counted
    # those 20 already, so the next request waits until they have left its one-second window.
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)

    async def scenario() -> float:
        for _ in range(20):
            await limiter.known()
            await limiter.admit(Cost())
        limiter.observe({"x-ratelimit-limit-requests": "600"}, ok=True)
        start = clock.now
        await limiter.admit(Cost())
        return clock.now - start

    assert 1.0 <= asyncio.run(scenario()) <= 1.1


def test_learned_limits_pace_requests() -> None:
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep)

    async def admit_many() -> float:
        await limiter.known()
        await limiter.admit(Cost())
        limiter.observe({"x-ratelimit-limit-requests": "600"}, ok=True)
        start = clock.now
        for _ in range(50):
            await limiter.admit(Cost())
        return clock.now - start

    assert 45 / 10.0 <= asyncio.run(admit_many()) <= 50 / 9.0


def test_under_a_known_limit_a_lone_429_only_cools_down() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=6000, clock=clock, sleep=clock.sleep)
    limiter.on_rate_limited(retry_after=1.0, headers=OPENAI)  # with the limit's headers: the limit, not the request
    stats = limiter.stats()
    # The others are held only while the jitter passes, not for the whole (whole-second) Retry-After.
    assert stats.rpm_pace == 6000 and stats.cool_downs == 1 and stats.cooling_for_s == pytest.approx(LONE_HOLD_S)
    clock.now += 5
    limiter.on_rate_limited(retry_after=None, headers=OPENAI)
    assert limiter.stats().rpm_pace == 6000
    clock.now += 0.5
    limiter.on_rate_limited(retry_after=1.0, headers=OPENAI)  # again within a second: the whole wait
    assert limiter.stats().cooling_for_s == 1.0


def test_repeated_429s_are_one_step_down_a_second() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=6000, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        limiter.on_rate_limited(retry_after=0.5)
    assert limiter.stats().rpm_pace == 6000 * DECREASE_UNDER_CEILING
    clock.now += 0.5
    limiter.on_rate_limited(retry_after=None)
    assert limiter.stats().rpm_pace == 6000 * DECREASE_UNDER_CEILING
    clock.now += 0.6
    limiter.on_rate_limited(retry_after=None)
    # Nothing but 429s in the last two seconds: the limit is mostly someone else's, so the step is deepest.
    assert limiter.stats().rpm_pace == 6000 * DECREASE_UNDER_CEILING * DEEPEST_DECREASE
