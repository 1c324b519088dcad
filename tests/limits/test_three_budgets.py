"""Requests, input tokens and output tokens as budgets of their own, driven through the engine on virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from test_engine_unit import collect, run_virtual

from llmgather.backends.function import FunctionBackend
from llmgather.engine import Engine
from llmgather.errors import RateLimitError, ServerError
from llmgather.limits import Limits
from llmgather.retry import RetryPolicy
from llmgather.types import Request, Response, Usage

LONG = "x" * 4000  # about a thousand tokens, as estimated


def engine(
    usage: Callable[[Request], Usage], *, latency_s: float = 0.0, **options: Any
) -> tuple[Engine, list[float], list[int]]:
    """An engine over a backend that answers after `latency_s` with `usage`; it notes when each request went
    and how many were in flight at once."""
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    in_flight = [0, 0]  # now, most

    async def handler(request: Request) -> Response:
        sent.append(loop.time())
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            await asyncio.sleep(latency_s)
        finally:
            in_flight[0] -= 1
        return Response(content="ok", usage=usage(request))

    options.setdefault("retry", RetryPolicy(max_retries=5, deadline_s=None))
    return Engine(FunctionBackend(handler), clock=loop.time, timeout_s=30.0, **options), sent, in_flight


def asking(n: int, prompt: str = "question", **params: Any) -> list[Request]:
    return [
        Request(id=f"r{i}", messages=[{"role": "user", "content": f"{prompt} {i}"}], params=params) for i in range(n)
    ]


def test_output_is_reserved_at_max_tokens_and_settled_at_what_was_used() -> None:
    # 60,000 output tokens a minute (1,000 a second); each request may write 100 but writes 10. Settled at 10,
    # about 90 go a second (the second's reservations, 100 each, fit beside what the others used): 300 take
    # about 3.3 s. Left at their reservation, 10 would go a second: 30 s.
    async def scenario() -> float:
        run, sent, _ = engine(lambda r: Usage(5, 10), limits=Limits(concurrency=20, output_tpm=60_000))
        results, stopped = await collect(run, asking(300, max_tokens=100))
        assert stopped is None and all(r.ok for r in results)
        return sent[-1] - sent[0]

    assert 2.5 <= run_virtual(scenario) <= 6


def test_the_output_budget_alone_holds_a_run_whose_input_is_far_under_its_own() -> None:
    # Input 6,000,000 a minute is never near; output 6,000 (100 a second) with 50 written each: 2 a second.
    async def scenario() -> tuple[float, int]:
        run, sent, _ = engine(
            lambda r: Usage(1000, 50), limits=Limits(concurrency=50, input_tpm=6_000_000, output_tpm=6000)
        )
        await collect(run, asking(100, LONG, max_tokens=50))
        window = [t for t in sent if t >= 10.0]
        per_s = max(sum(1 for t in window if s <= t < s + 1.0) for s in window)
        return sent[-1] - sent[0], per_s

    elapsed, busiest_second = run_virtual(scenario)
    assert 45 <= elapsed <= 52  # 100 * 50 / 100 a second
    assert busiest_second <= 3


def test_the_input_budget_counts_what_the_usage_says() -> None:
    # The estimate is about 1,000 tokens a prompt; the provider counts 200. Settled at 200, input 600,000 a
    # minute (10,000 a second) lets about 45 go a second; left at the estimate, 10.
    async def scenario() -> float:
        run, sent, _ = engine(lambda r: Usage(200, 5), limits=Limits(concurrency=50, input_tpm=600_000))
        await collect(run, asking(300, LONG))
        return sent[-1] - sent[0]

    assert 5 <= run_virtual(scenario) <= 12


@pytest.mark.parametrize("latency_s", [0.0, 2.0])
def test_cache_reads_are_left_out_of_the_input_budget_where_the_provider_leaves_them_out(latency_s: float) -> None:
    # Each prompt counts 1,000 tokens, 900 of them read from the cache. Anthropic counts the other 100. With
    # answers that take longer than the one-second window, only an admission that reserves 100 gains anything.
    def run_with(cache_reads_count: bool) -> float:
        async def scenario() -> float:
            run, sent, _ = engine(
                lambda r: Usage(1000, 5, cache_read_tokens=900),
                latency_s=latency_s,
                limits=Limits(concurrency=200, input_tpm=600_000),
                cache_reads_count=cache_reads_count,
            )
            await collect(run, asking(200, LONG))
            return sent[-1] - sent[0]

        return run_virtual(scenario)

    counted, left_out = run_with(True), run_with(False)
    assert 18 <= counted <= 24  # 200 * 1,000 / 10,000 a second
    assert left_out < counted / 3


def test_with_a_token_limit_given_the_run_starts_at_once() -> None:
    # Before, the first request went alone and every other waited for its answer (here 5 s).
    async def scenario() -> tuple[int, float]:
        run, sent, in_flight = engine(
            lambda r: Usage(10, 10), latency_s=5.0, limits=Limits(concurrency=50, rpm=1_000_000, tpm=10_000_000)
        )
        await collect(run, asking(100))
        return in_flight[1], sent[1] - sent[0]

    most_in_flight, second_after_first = run_virtual(scenario)
    assert most_in_flight == 50
    assert second_after_first < 0.1


def test_a_429_only_two_prompts_get_does_not_slow_the_rest() -> None:
    # No rate-limit headers, and everything else goes through alongside: those two are their own problem.
    # Before, each of their retries stepped the whole run's pace down, to a floor of 6 a minute.
    async def scenario() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        done_at: list[float] = []

        async def handler(request: Request) -> Response:
            if request.id in ("r3", "r500"):
                raise RateLimitError("forced 429", status=429)
            await asyncio.sleep(0.05)
            done_at.append(loop.time())
            return Response(content="ok", usage=Usage(5, 5))

        run = Engine(
            FunctionBackend(handler),
            clock=loop.time,
            limits=Limits(concurrency=100),
            retry=RetryPolicy(max_retries=6, deadline_s=None),
        )
        results, _ = await collect(run, asking(1000))
        return max(done_at), loop.time(), sum(not r.ok for r in results)

    last_success, _, failed = run_virtual(scenario)
    assert failed == 2
    assert last_success < 1.5  # 10 rounds of 0.05 s: 0.5 s; before, minutes


def test_a_429_that_names_a_quota_holds_everyone_for_its_retry_delay() -> None:
    # Gemini's per-minute quota refusals carry no rate-limit headers, but they name the project's quota and
    # give a retryDelay: the whole run waits it out, instead of sending into a spent quota.
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        done_at: list[float] = []
        refused: set[object] = set()

        async def handler(request: Request) -> Response:
            if request.id in ("r3", "r500") and request.id not in refused:
                refused.add(request.id)
                quota = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
                raise RateLimitError("quota", status=429, code=quota, retry_after=2.0)
            await asyncio.sleep(0.05)
            done_at.append(loop.time())
            return Response(content="ok", usage=Usage(5, 5))

        run = Engine(FunctionBackend(handler), clock=loop.time, limits=Limits(concurrency=100))
        results, _ = await collect(run, asking(1000))
        assert all(r.ok for r in results)
        return sorted(done_at)[len(done_at) // 2]

    # Held for the retryDelay from the first refusal on; taken as the requests' own, half were done by 0.25 s.
    assert run_virtual(scenario) >= 2.0


def test_output_is_reserved_at_the_max_tokens_the_backend_sends_for_a_request_that_sets_none() -> None:
    # 600,000 output tokens a minute is 10,000 a second. The provider reserves the 4,000 the backend sends, for
    # as long as each answer takes (0.5 s): at most two fit in flight. Reserved at the typical completion
    # instead, far more go, and the provider refuses them.
    def most_in_flight(default_max_tokens: int | None) -> int:
        async def scenario() -> int:
            loop = asyncio.get_running_loop()
            in_flight = [0, 0]

            async def handler(request: Request) -> Response:
                in_flight[0] += 1
                in_flight[1] = max(in_flight)
                await asyncio.sleep(0.5)
                in_flight[0] -= 1
                return Response(content="ok", usage=Usage(5, 10))

            run = Engine(
                FunctionBackend(handler),
                clock=loop.time,
                limits=Limits(concurrency=40, output_tpm=600_000),
                default_max_tokens=default_max_tokens,  # as the Anthropic backend sends for a request that sets none
                retry=RetryPolicy(max_retries=5, deadline_s=None),
            )
            await collect(run, asking(40))
            return in_flight[1]

        return run_virtual(scenario)

    assert most_in_flight(4000) <= 2
    assert most_in_flight(None) > 4


def test_an_attempt_accepted_and_then_failed_mid_stream_is_counted_as_it_was_sent() -> None:
    # Anthropic counts a request it accepted (a 200 began) though an error event cut its stream: given back to
    # the pace, the retry would go at once, and the run would send at twice the limit.
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        sent: list[float] = []
        failed_once: set[object] = set()

        async def handler(request: Request) -> Response:
            sent.append(loop.time())
            if request.id not in failed_once:
                failed_once.add(request.id)
                error = ServerError("overloaded_error mid-stream", status=529)
                error.counted = True
                raise error
            return Response(content="ok", usage=Usage(5, 5))

        run = Engine(
            FunctionBackend(handler),
            clock=loop.time,
            limits=Limits(concurrency=20, rpm=600),
            retry=RetryPolicy(max_retries=3, base_s=0.0, max_wait_s=0.0, deadline_s=None),
        )
        results, _ = await collect(run, asking(50))
        assert all(r.ok for r in results)
        return sent[-1] - sent[0]

    assert run_virtual(scenario) >= 9.0  # 100 attempts at 10 a second; refunded, the 50 retries went at once
