"""Rate-limit headers as OpenAI and Anthropic send them: every header feeds its own budget, resets are read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from test_bucket import FakeClock

from llmgather.limits import Cost, Limiter
from llmgather.limits.headers import Announced, Kind, announced, has_limit_headers

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC).timestamp()

ANTHROPIC = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": "2026-11-26T12:00:00.015Z",
    "anthropic-ratelimit-input-tokens-limit": "400000",
    "anthropic-ratelimit-input-tokens-remaining": "399000",
    "anthropic-ratelimit-input-tokens-reset": "2026-11-26T12:00:01Z",
    "anthropic-ratelimit-output-tokens-limit": "80000",
    "anthropic-ratelimit-output-tokens-remaining": "79500",
    "anthropic-ratelimit-output-tokens-reset": "2026-11-26T12:00:07Z",
    # The most restrictive of the two now, not a budget of its own.
    "anthropic-ratelimit-tokens-limit": "80000",
    "anthropic-ratelimit-tokens-remaining": "79500",
    "anthropic-ratelimit-tokens-reset": "2026-11-26T12:00:07Z",
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("250ms", 0.25), ("20ms", 0.02), ("1.5s", 1.5), ("1h2m3s", 3723.0), ("7", 7.0)],
)
def test_openai_resets_are_durations(text: str, seconds: float) -> None:
    headers = {"x-ratelimit-limit-requests": "6000", "x-ratelimit-reset-requests": text}
    assert announced(headers, NOW)[Kind.REQUESTS].reset_s == pytest.approx(seconds)


def test_a_reset_that_is_not_a_duration_is_not_guessed_at() -> None:
    headers = {"x-ratelimit-limit-requests": "6000", "x-ratelimit-reset-requests": "soon"}
    assert announced(headers, NOW)[Kind.REQUESTS] == Announced(6000.0, None, None)


def test_openai_headers_feed_requests_and_the_combined_token_budget() -> None:
    headers = {
        "x-ratelimit-limit-requests": "6000",
        "x-ratelimit-remaining-requests": "5999",
        "x-ratelimit-reset-requests": "10ms",
        "x-ratelimit-limit-tokens": "400000",
        "x-ratelimit-remaining-tokens": "399500",
        "x-ratelimit-reset-tokens": "75ms",
    }
    assert announced(headers, NOW) == {
        Kind.REQUESTS: Announced(6000.0, 5999.0, 0.01),
        Kind.TOKENS: Announced(400000.0, 399500.0, 0.075),
    }


def test_anthropic_headers_feed_each_their_own_budget_and_resets_are_rfc3339() -> None:
    found = announced(ANTHROPIC, NOW)
    assert found.keys() == {Kind.REQUESTS, Kind.INPUT, Kind.OUTPUT}  # `tokens` is not a fourth budget
    requests = found[Kind.REQUESTS]
    assert (requests.limit, requests.remaining) == (4000.0, 3999.0)
    assert requests.reset_s == pytest.approx(0.015, abs=1e-5)
    assert found[Kind.INPUT] == Announced(400000.0, 399000.0, 1.0)
    assert found[Kind.OUTPUT] == Announced(80000.0, 79500.0, 7.0)


def test_anthropic_tokens_alone_is_the_combined_budget() -> None:
    # An answer that announces only `tokens` (no input or output apart) counts them together.
    headers = {"anthropic-ratelimit-tokens-limit": "100000", "anthropic-ratelimit-tokens-reset": "2026-11-26T12:01:00Z"}
    assert announced(headers, NOW) == {Kind.TOKENS: Announced(100000.0, None, 60.0)}


def test_a_limiter_learns_input_and_output_each_from_its_own_header() -> None:
    # A peer swapped them: then output would pace at 400,000 a minute and input at 80,000.
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep, wall=lambda: NOW)
    limiter.observe(ANTHROPIC, ok=True)
    stats = limiter.stats()
    assert (stats.input_tpm_limit, stats.output_tpm_limit) == (400000.0, 80000.0)
    assert (stats.rpm_limit, stats.tpm_limit) == (4000.0, None)


def test_each_learned_budget_paces_its_own_tokens() -> None:
    # Input 60,000 a minute (1,000 a second), output 6,000 (100 a second). Requests of 10 input and 100
    # output tokens are held by the output budget: about one a second. Swapped, they would go ten at once.
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep, ramp=False, wall=lambda: NOW)
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "60000",
        "anthropic-ratelimit-input-tokens-reset": "2026-11-26T12:00:01Z",
        "anthropic-ratelimit-output-tokens-limit": "6000",
        "anthropic-ratelimit-output-tokens-reset": "2026-11-26T12:00:01Z",
    }

    async def scenario() -> float:
        await limiter.known()
        limiter.settle(await limiter.admit(Cost(10, 100)), None)  # the first answer, before limits were known
        limiter.observe(headers, ok=True)
        start = clock.now
        for _ in range(10):
            await limiter.admit(Cost(10, 100))
        return clock.now - start

    assert 8.0 <= asyncio.run(scenario()) <= 11.5


def burst_after_first_answer(headers: dict[str, str], n: int, **told: float) -> int:
    """Of `n` requests waiting once the first answer has come with `headers`, how many go at once."""
    clock = FakeClock()
    limiter = Limiter(clock=clock, sleep=clock.sleep, wall=lambda: NOW, **told)  # type: ignore[arg-type]

    async def scenario() -> int:
        await limiter.known()
        limiter.settle(await limiter.admit(Cost(10, 10)), Cost(10, 10))
        limiter.observe(headers, ok=True)
        start = clock.now
        went = 0

        async def one() -> None:
            nonlocal went
            await limiter.admit(Cost(10, 10))
            went += clock.now == start

        await asyncio.gather(*(one() for _ in range(n)))
        return went

    return asyncio.run(scenario())


# LiteLLM Proxy counts per clock minute and says what is left, but not when it is whole again.
CLOCK_MINUTE = {"x-ratelimit-limit-requests": "1000", "x-ratelimit-remaining-requests": "950"}


def test_what_a_clock_window_says_is_left_goes_at_once() -> None:
    assert burst_after_first_answer(CLOCK_MINUTE, 600) == 600  # before: about 17 a second, over 36 s


def test_no_more_than_what_is_left_goes_at_once() -> None:
    assert 930 <= burst_after_first_answer(CLOCK_MINUTE, 1200) <= 950


def test_a_limit_that_says_its_reset_is_paced_as_before() -> None:
    # OpenAI (and the fake's default) quantize the minute to the second: a burst would be refused.
    paced = burst_after_first_answer({**CLOCK_MINUTE, "x-ratelimit-reset-requests": "3s"}, 600)
    assert paced <= 1000 / 60


def test_a_user_who_keeps_part_of_the_limit_back_is_paced_at_it() -> None:
    assert burst_after_first_answer(CLOCK_MINUTE, 600, rpm=300) <= 300 / 60


def test_rate_limit_headers_are_found_however_a_server_capitalises_them() -> None:
    # A 429 that carries them is the shared limit's, not the request's own: the check must see them.
    assert has_limit_headers({"X-RateLimit-Limit-Requests": "60", "X-RateLimit-Remaining-Requests": "0"})
    assert not has_limit_headers({"Content-Type": "application/json"})
