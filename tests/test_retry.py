from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from llmgather.errors import (
    AuthenticationError,
    ConnectError,
    ModelNotFoundError,
    PermanentError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeout,
    ServerError,
    error_for_status,
)
from llmgather.retry import RetryPolicy, parse_retry_after


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(max_retries=10, base_s=0.5, max_wait_s=4.0, deadline_s=None)
    rng = random.Random(1)
    for failed in range(1, 8):
        ceiling = min(4.0, 0.5 * 2 ** (failed - 1))
        waits = [policy.next_wait(ServerError("x"), failed, 0.0, rng) for _ in range(200)]
        assert all(w is not None and 0 <= w <= ceiling for w in waits)
        assert max(w for w in waits if w is not None) > ceiling * 0.8


def test_the_first_retry_after_a_drop_goes_at_once() -> None:
    policy = RetryPolicy(base_s=1.0)
    rng = random.Random(5)
    assert policy.next_wait(ConnectError("reset"), 1, 0.0, rng) == 0.0
    assert any((policy.next_wait(ConnectError("reset"), 2, 0.0, rng) or 0) > 0 for _ in range(20))


def test_time_spent_in_the_failed_attempt_counts_towards_the_backoff() -> None:
    policy = RetryPolicy(base_s=0.5, max_wait_s=4.0)
    rng = random.Random(5)
    assert all(policy.next_wait(RequestTimeout("slow"), n, 0.0, rng, attempt_s=5.0) == 0.0 for n in (1, 2, 3))
    waits = [policy.next_wait(ServerError("x"), 3, 0.0, rng, attempt_s=1.0) for _ in range(200)]
    assert all(w is not None and 0.0 <= w <= 1.0 for w in waits) and max(w or 0 for w in waits) > 0.8


def test_never_shorter_than_retry_after() -> None:
    policy = RetryPolicy(base_s=0.01)
    error = RateLimitError("slow down", status=429, retry_after=7.5)
    assert all(policy.next_wait(error, 1, 0.0, random.Random(i)) == 7.5 for i in range(50))


def test_gives_up_after_max_retries_and_at_the_deadline() -> None:
    policy = RetryPolicy(max_retries=2, deadline_s=10.0)
    rng = random.Random(0)
    assert policy.next_wait(ServerError("x"), 2, 0.0, rng) is not None
    assert policy.next_wait(ServerError("x"), 3, 0.0, rng) is None
    assert policy.next_wait(RateLimitError("x", retry_after=5.0), 1, 6.0, rng) is None


@pytest.mark.parametrize("error", [PermanentError("x"), AuthenticationError("x"), QuotaExceededError("x")])
def test_only_transient_errors_are_retried(error: Exception) -> None:
    assert RetryPolicy().next_wait(error, 1, 0.0, random.Random()) is None


def test_testing_policy_drops_the_waits_but_keeps_the_bound() -> None:
    policy = RetryPolicy.testing(max_retries=1)
    assert policy.next_wait(ServerError("x"), 1, 0.0, random.Random()) == 0.0
    assert policy.next_wait(ServerError("x"), 2, 0.0, random.Random()) is None


def test_parse_retry_after_in_its_three_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now.timestamp()) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (429, "rate_limit_exceeded", RateLimitError),
        (429, "insufficient_quota", QuotaExceededError),
        (401, None, AuthenticationError),
        (403, None, AuthenticationError),
        (404, "model_not_found", ModelNotFoundError),
        (404, None, PermanentError),
        (400, "context_length_exceeded", PermanentError),
        (413, None, PermanentError),
        (408, None, ServerError),
        (409, None, ServerError),
        (500, None, ServerError),
        (529, None, ServerError),
    ],
)
def test_statuses_map_onto_the_taxonomy(status: int, code: str | None, kind: type) -> None:
    error = error_for_status(status, "m", code=code)
    assert type(error) is kind and error.status == status
