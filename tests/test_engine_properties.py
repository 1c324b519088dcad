"""Properties of the engine over random runs on virtual time: random outcomes per attempt (success, 429 with
and without Retry-After, 5xx, timeout, a dropped connection, a permanent or fatal error), random stops at
random times, random budgets of cost and of requests, random limits and deadlines.

Whatever happens: each request yields at most one result; nothing is sent after a stop; a budget is passed by
no more than what was in flight; the run ends (within a bound of virtual time, and never waiting with nothing
scheduled); and no task is left running.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_unit import collect, run_virtual

from llmgather.backends.function import FunctionBackend
from llmgather.budget import Budget
from llmgather.engine import Engine, StopReason
from llmgather.errors import (
    AuthenticationError,
    ConnectError,
    PermanentError,
    RateLimitError,
    ServerError,
)
from llmgather.limits import Limits
from llmgather.retry import RetryPolicy
from llmgather.types import Request, Response, Result, Usage

TIMEOUT_S = 2.0
PRICE_PER_TOKEN = 1e-6
MOST_TOKENS = 300

OUTCOMES = ("ok", "429", "429 retry-after", "5xx", "timeout", "drop", "400", "fatal")
# Mostly answers, so that runs get somewhere; every kind of failure often enough to meet the others.
WEIGHTS = (10, 2, 2, 2, 1, 2, 1, 0.2)


@dataclass
class Plan:
    requests: int
    seed: int
    concurrency: int
    rpm: float | None
    max_retries: int
    deadline_s: float | None
    max_cost_usd: float | None
    max_requests: int | None
    stops: list[float]


@dataclass
class Seen:
    """What the backend saw: every send, and whether the engine was stopping at that moment."""

    sends: list[str] = field(default_factory=list)
    sent_while_stopping: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0


plans = st.builds(
    Plan,
    requests=st.integers(1, 60),
    seed=st.integers(0, 2**32),
    concurrency=st.integers(1, 8),
    rpm=st.none() | st.floats(30, 3000),
    max_retries=st.integers(0, 4),
    deadline_s=st.none() | st.floats(1, 60),
    max_cost_usd=st.none() | st.floats(0.0005, 0.02),
    max_requests=st.none() | st.integers(1, 80),
    stops=st.lists(st.floats(0, 30), max_size=2),
)


def backend_for(plan: Plan, seen: Seen, engine: list[Engine]) -> FunctionBackend:
    rng = random.Random(plan.seed)

    async def handler(request: Request) -> Response:
        if engine[0].stopping:
            seen.sent_while_stopping.append(request.id)
        seen.sends.append(request.id)
        seen.in_flight += 1
        seen.most_in_flight = max(seen.most_in_flight, seen.in_flight)
        try:
            outcome = rng.choices(OUTCOMES, WEIGHTS)[0]
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            if outcome == "ok":
                return Response(content="ok", usage=Usage(rng.randint(1, 100), rng.randint(0, MOST_TOKENS - 100)))
            if outcome.startswith("429"):
                retry_after = rng.uniform(0.0, 5.0) if outcome.endswith("retry-after") else None
                raise RateLimitError("slow down", status=429, retry_after=retry_after)
            if outcome == "5xx":
                raise ServerError("overloaded", status=503)
            if outcome == "timeout":
                await asyncio.sleep(10 * TIMEOUT_S)
            if outcome == "drop":
                raise ConnectError("connection reset by peer")
            if outcome == "400":
                raise PermanentError("bad request", status=400)
            raise AuthenticationError("invalid api key", status=401)
        finally:
            seen.in_flight -= 1

    return FunctionBackend(handler)


async def run_plan(plan: Plan, seen: Seen) -> tuple[list[Result], Engine, Budget | None]:
    loop = asyncio.get_running_loop()
    budget = None
    if plan.max_cost_usd is not None or plan.max_requests is not None:
        budget = Budget(plan.max_cost_usd, plan.max_requests)
    holder: list[Engine] = []
    engine = Engine(
        backend_for(plan, seen, holder),
        limits=Limits(concurrency=plan.concurrency, rpm=plan.rpm),
        retry=RetryPolicy(max_retries=plan.max_retries, base_s=0.5, max_wait_s=8.0, deadline_s=plan.deadline_s),
        timeout_s=TIMEOUT_S,
        cost=lambda usage: (usage.prompt_tokens + usage.completion_tokens) * PRICE_PER_TOKEN,
        budget=budget,
        rng=random.Random(plan.seed),
        clock=loop.time,
    )
    holder.append(engine)
    for at in plan.stops:
        loop.call_at(at, engine.stop, StopReason.SIGNAL)
    items = [Request.from_prompt(f"r{i}", f"question {i}", max_tokens=MOST_TOKENS) for i in range(plan.requests)]
    results, _ = await collect(engine, items)
    return results, engine, budget


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans)
def test_the_engine_keeps_its_promises_whatever_happens(plan: Plan) -> None:
    seen = Seen()
    # Ends, with no task left behind (checked by run_virtual), long before this much virtual time.
    results, engine, budget = run_virtual(lambda: run_plan(plan, seen), limit_s=10_000.0)

    ids = [result.id for result in results]
    assert len(ids) == len(set(ids)), "a request yielded two results"
    assert set(ids) <= {f"r{i}" for i in range(plan.requests)}
    assert seen.sent_while_stopping == [], "sent after the run began to stop"
    assert seen.most_in_flight <= plan.concurrency
    if engine.stop_reason is None:
        assert len(ids) == plan.requests, "the run ended without an answer for every request"
    if budget is not None and plan.max_requests is not None:
        assert len(seen.sends) <= plan.max_requests
    if budget is not None and plan.max_cost_usd is not None:
        # Past the limit by at most the answers in flight when it was reached (or the first answer, which
        # goes whatever its estimate).
        most_per_answer = MOST_TOKENS * PRICE_PER_TOKEN
        assert budget.spent_usd <= plan.max_cost_usd + plan.concurrency * most_per_answer + 1e-12
        assert budget.held == 0
