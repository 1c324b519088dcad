"""No wait in admission outlives a request's deadline: not a cool-down of hours, not a pace too slow for it;
and a request no limit could ever admit fails at once instead of waiting forever."""

from __future__ import annotations

import asyncio

from test_engine_unit import collect, run_virtual
from test_three_budgets import asking, engine

from llmgather.backends.function import FunctionBackend
from llmgather.engine import Engine
from llmgather.errors import RateLimitError
from llmgather.limits import Limits
from llmgather.retry import RetryPolicy
from llmgather.types import Request, Response, Usage


def test_a_cool_down_of_hours_fails_the_waiting_requests_at_their_deadline() -> None:
    # One 429 of the shared limit (it carries the limit's headers) asks for 100,000 s. Before, the other requests
    # waited it out, whatever --deadline said.
    async def scenario() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()

        async def handler(request: Request) -> Response:
            if request.id == "r0":
                headers = {"x-ratelimit-limit-requests": "100000", "x-ratelimit-remaining-requests": "0"}
                raise RateLimitError("slow down", status=429, retry_after=100_000.0, headers=headers)
            return Response(content="ok", usage=Usage(5, 5))

        run = Engine(
            FunctionBackend(handler),
            clock=loop.time,
            limits=Limits(concurrency=4),
            retry=RetryPolicy(max_retries=2, deadline_s=10.0),
        )
        started = loop.time()
        results, _ = await collect(run, asking(4))
        return loop.time() - started, [r.error.message if r.error else "ok" for r in results]

    took, outcomes = run_virtual(scenario)
    assert took <= 10.5
    assert sum("not sent within the 10 s deadline" in outcome for outcome in outcomes) == 3


def test_a_pace_too_slow_for_the_deadline_fails_the_request_at_its_deadline() -> None:
    # 60 output tokens a minute, 30 reserved a request: one every 30 s. With a 5 s deadline the others fail at
    # 5 s (they waited 47 s before).
    async def scenario() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        run, _, _ = engine(
            lambda r: Usage(5, 30),
            limits=Limits(concurrency=4, output_tpm=60),
            retry=RetryPolicy(max_retries=2, deadline_s=5.0),
        )
        started = loop.time()
        results, _ = await collect(run, asking(4, max_tokens=30))
        return loop.time() - started, sum(r.ok for r in results)

    took, answered = run_virtual(scenario)
    assert answered >= 1
    assert took <= 5.5


def test_a_request_larger_than_a_whole_minute_of_a_limit_fails_at_once_and_is_never_sent() -> None:
    async def scenario() -> tuple[list[str], int]:
        run, sent, _ = engine(lambda r: Usage(5, 10), limits=Limits(concurrency=4, output_tpm=1_000))
        results, _ = await collect(run, asking(3, max_tokens=4_096))
        return [r.error.message if r.error else "ok" for r in results], len(sent)

    messages, sent = run_virtual(scenario)
    assert sent == 0
    assert all("4,096 output tokens, more than the 1,000 a minute" in message for message in messages)


def test_deadlines_of_waiters_let_in_are_not_kept() -> None:
    # A rate-bound run's queue never empties; the deadlines of those already admitted must not pile up.
    from test_bucket import FakeClock

    from llmgather.limits import Cost, Limiter

    clock = FakeClock()
    limiter = Limiter(rpm=6_000, clock=clock, sleep=clock.sleep)
    kept: list[int] = []

    async def scenario() -> None:
        async def one() -> None:
            await limiter.admit(Cost(), deadline=clock.now + 1_000.0)
            kept.append(len(limiter._deadlines) - len(limiter._queue))

        await asyncio.gather(*(one() for _ in range(500)))

    asyncio.run(scenario())
    assert max(kept) <= 1
