"""The engine alone, on virtual time, with `FunctionBackend`: budgets end, deadlines bound every wait, a wrong
endpoint stops the run, and why it stopped is a `StopReason`. No process is started and no test sleeps, except
in the last two, which check the same through the command line against real sockets.

`VirtualTimeLoop` runs timers at once: when nothing is ready, the loop's clock jumps to the next timer. A run
that would wait forever with nothing scheduled raises `Hang` instead of hanging the test.
"""

from __future__ import annotations

import asyncio
import random
import selectors
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import FakeServer, read_jsonl, run_cli, write_jsonl

from llmgather.backends.function import FunctionBackend
from llmgather.budget import Budget
from llmgather.engine import Engine, StopReason
from llmgather.errors import (
    AuthenticationError,
    ConnectError,
    ModelNotFoundError,
    PermanentError,
    RunStopped,
)
from llmgather.limits import Limits
from llmgather.retry import RetryPolicy
from llmgather.types import Request, Response, Result, Usage

T = TypeVar("T")


class Hang(Exception):
    """Nothing is ready and nothing is scheduled: on a real loop the run would wait forever."""


class _VirtualSelector:
    """The loop's selector, except that waiting for a timer moves the clock instead of sleeping."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = self._real.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # a thread may still wake the loop; give it a moment of real time
            events = self._real.select(2.0)
            if not events:
                raise Hang("nothing is ready and nothing is scheduled")
            return events
        self._loop.now += timeout
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _VirtualSelector(self._selector, self)  # type: ignore[arg-type,assignment]

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[], Awaitable[T]], *, limit_s: float = 100_000.0) -> T:
    """Run `main()` on virtual time; fail if it outlives `limit_s` virtual seconds or leaves a task behind."""

    async def bounded() -> T:
        async with asyncio.timeout(limit_s):
            value = await main()
        for _ in range(5):  # a helper cancelled at the very end needs a step or two to unwind
            left = asyncio.all_tasks() - {asyncio.current_task()}
            if not left:
                break
            await asyncio.sleep(0)
        assert not left, left
        return value

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(bounded())


def requests(n: int) -> list[Request]:
    return [Request(id=f"r{i}", messages=[{"role": "user", "content": f"question {i}"}]) for i in range(n)]


def engine_for(handler: Callable[[Request], Awaitable[Response | str]], **options: Any) -> Engine:
    loop = asyncio.get_running_loop()
    options.setdefault("retry", RetryPolicy(max_retries=5, deadline_s=None))
    return Engine(FunctionBackend(handler), clock=loop.time, timeout_s=options.pop("timeout_s", 10.0), **options)


async def collect(engine: Engine, items: list[Request]) -> tuple[list[Result], RunStopped | None]:
    results: list[Result] = []
    try:
        async for result in engine.results(items):
            results.append(result)
    except RunStopped as stopped:
        return results, stopped
    return results, None


# -- the budget always ends ----------------------------------------------------------------------


def test_what_is_held_returns_to_exactly_nothing() -> None:
    # Floats left 2.8e-17 held with nothing in flight: the next request that did not fit waited forever for
    # a hold to settle that no request held.
    async def scenario() -> bool | None:
        budget = Budget(max_cost_usd=1.0)
        first, second = await budget.take(lambda: 0.1), await budget.take(lambda: 0.2)
        assert first is not None and second is not None
        budget.release(first)
        budget.release(second)
        budget.charge(0.75)
        assert budget.held_usd == 0.0
        return budget.try_take(0.3)

    assert asyncio.run(scenario()) is False  # spent, not "wait for what is held"


def test_a_run_under_a_cost_budget_of_many_small_random_costs_ends() -> None:
    rng = random.Random(11)  # with money in floats, this run never ended

    async def handler(request: Request) -> Response:
        await asyncio.sleep(rng.uniform(0.01, 0.5))
        return Response(content="ok", usage=Usage(rng.randint(1, 40), rng.randint(1, 90)))

    async def scenario() -> tuple[list[Result], RunStopped | None, Budget]:
        budget = Budget(max_cost_usd=0.01)
        price = rng.uniform(1e-7, 3e-6)
        engine = engine_for(
            handler,
            limits=Limits(concurrency=7),
            budget=budget,
            cost=lambda usage: (usage.prompt_tokens + usage.completion_tokens) * price,
        )
        results, stopped = await collect(engine, requests(3000))
        return results, stopped, budget

    results, stopped, budget = run_virtual(scenario)
    assert stopped is not None and "budget" in str(stopped)
    assert budget.held == 0
    assert len({r.id for r in results}) == len(results) > 0


# -- the deadline bounds every wait --------------------------------------------------------------


def refused(counter: list[int]) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        counter.append(1)
        await asyncio.sleep(0.001)
        raise ConnectError("Cannot connect to host 127.0.0.1:9 [Connect call failed]")

    return handler


@pytest.mark.parametrize(("count", "deadline_s"), [(10, 5.0), (400, 5.0), (3000, 120.0)])
def test_against_a_dead_endpoint_every_request_fails_within_about_the_deadline(count: int, deadline_s: float) -> None:
    sent: list[int] = []

    async def scenario() -> tuple[list[Result], float]:
        engine = engine_for(refused(sent), limits=Limits(concurrency=8), retry=RetryPolicy(deadline_s=deadline_s))
        results, stopped = await collect(engine, requests(count))
        assert stopped is None
        return results, asyncio.get_running_loop().time()

    results, ended_at = run_virtual(scenario)
    # The first requests by their deadline; those that come once the endpoint has failed everything for a
    # whole deadline fail at once. Waiting out the breaker's pauses (up to 30 s each, a probe at a time)
    # once made it minutes per result; waiting out each request's deadline, a deadline per slot-full.
    assert ended_at <= 2 * deadline_s
    assert sorted(r.id for r in results) == sorted(r.id for r in requests(count))
    for result in results:
        assert result.error is not None and result.error.type == "ConnectError"
        assert "Connect call failed" in result.error.message
    assert any("deadline" in r.error.message for r in results if r.error is not None)
    assert len(sent) < 6 * count  # the open breaker held most of the retries back


def test_a_request_not_sent_by_its_deadline_says_so() -> None:
    async def handler(request: Request) -> Response:
        return Response(content="ok")

    async def scenario() -> list[Result]:
        # One request a minute: the second cannot go within a 5 s deadline.
        engine = engine_for(handler, limits=Limits(rpm=1), retry=RetryPolicy(deadline_s=5.0))
        results, stopped = await collect(engine, requests(2))
        assert stopped is None
        return results

    first, second = run_virtual(scenario)
    assert first.ok and second.error is not None
    assert (second.error.type, second.attempts) == ("RequestTimeout", 0)
    assert "not sent within the 5 s deadline" in second.error.message


def test_an_attempt_is_cut_at_the_deadline_not_at_its_longer_timeout() -> None:
    async def handler(request: Request) -> Response:
        await asyncio.sleep(50.0)
        return Response(content="late")

    async def scenario() -> tuple[Result, float]:
        engine = engine_for(handler, timeout_s=30.0, retry=RetryPolicy(deadline_s=4.0))
        [result], _ = await collect(engine, requests(1))
        return result, asyncio.get_running_loop().time()

    result, ended_at = run_virtual(scenario)
    assert result.error is not None and result.error.type == "RequestTimeout"
    assert ended_at == pytest.approx(4.0, abs=0.01)


# -- a wrong endpoint stops the run --------------------------------------------------------------


def test_a_404_to_every_first_request_stops_the_run() -> None:
    sent: list[str] = []

    async def handler(request: Request) -> Response:
        sent.append(request.id)
        await asyncio.sleep(0.05)
        raise PermanentError("404: Not Found", status=404)

    async def scenario() -> tuple[list[Result], RunStopped | None]:
        engine = engine_for(handler, limits=Limits(concurrency=4))
        return await collect(engine, requests(300))

    results, stopped = run_virtual(scenario)
    assert stopped is not None and isinstance(stopped.cause, ModelNotFoundError)
    assert "404" in str(stopped) and "function" in str(stopped)  # names the endpoint
    assert results == []  # nothing written: every request is left for a resume
    assert len(sent) <= 3 + 4


def test_a_404_after_a_success_fails_only_its_own_request() -> None:
    async def handler(request: Request) -> Response:
        await asyncio.sleep(0.05 if request.id == "r0" else 1.0)
        if request.id == "r3":
            raise PermanentError("no such thing", status=404)
        return Response(content="ok")

    async def scenario() -> tuple[list[Result], RunStopped | None]:
        return await collect(engine_for(handler, limits=Limits(concurrency=1)), requests(6))

    results, stopped = run_virtual(scenario)
    assert stopped is None
    assert [(r.id, r.ok) for r in results] == [(f"r{i}", i != 3) for i in range(6)]
    [failed] = [r for r in results if not r.ok]
    assert failed.error is not None and (failed.error.type, failed.attempts) == ("PermanentError", 1)


def test_a_refused_key_stops_the_run_at_its_first_answer() -> None:
    sent: list[str] = []

    async def handler(request: Request) -> Response:
        sent.append(request.id)
        raise AuthenticationError("invalid api key", status=401)

    async def scenario() -> tuple[list[Result], RunStopped | None, Engine]:
        engine = engine_for(handler, limits=Limits(concurrency=1))
        results, stopped = await collect(engine, requests(50))
        return results, stopped, engine

    results, stopped, engine = run_virtual(scenario)
    assert stopped is not None and isinstance(stopped.cause, AuthenticationError)
    assert (results, sent) == ([], ["r0"])
    assert engine.stop_reason is StopReason.FATAL and engine.stats().stopped_by == "AuthenticationError"


# -- why a run stopped ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        (StopReason.SIGNAL, "interrupted"),
        (StopReason.BUDGET, "budget"),
        (StopReason.INPUT, "an input error"),
        (StopReason.OUTPUT, "an output error"),
    ],
)
def test_a_stop_says_why_and_sends_nothing_more(reason: StopReason, shown: str) -> None:
    sent: list[str] = []

    async def handler(request: Request) -> Response:
        sent.append(request.id)
        await asyncio.sleep(1.0)
        return Response(content="ok")

    async def scenario() -> tuple[list[Result], RunStopped | None, Engine]:
        engine = engine_for(handler, limits=Limits(concurrency=2))
        asyncio.get_running_loop().call_at(2.5, engine.stop, reason)
        results, stopped = await collect(engine, requests(20))
        return results, stopped, engine

    results, stopped, engine = run_virtual(scenario)
    assert [r.id for r in results] == [f"r{i}" for i in range(6)]  # the two in flight at 2.5 s finish
    assert sent == [r.id for r in results]
    assert stopped is not None and engine.stop_reason is reason
    assert engine.stats().stopped_by == shown


# -- the same through the command line -----------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_run_against_a_closed_port_ends_by_its_deadline(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(10)])
    out = tmp_path / "out.jsonl"
    api_base = f"http://127.0.0.1:{closed_port()}/v1"
    args = ["run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", api_base]
    done = run_cli(*args, "--api-key-env", "OPENAI_API_KEY", "--deadline", "3", "--quiet")
    assert done.returncode == 1, done.stderr  # ended by itself (once: 182 s for --deadline 5), all failed
    lines = read_jsonl(out)
    assert sorted(line["id"] for line in lines) == [f"q{i}" for i in range(10)]
    for line in lines:
        assert line["error"]["type"] == "ConnectError"
        assert "Cannot connect" in line["error"]["message"]


def test_an_api_base_that_answers_404_stops_the_run_at_its_first_answers(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(200)])
    out = tmp_path / "out.jsonl"
    wrong = server.url.removesuffix("/v1") + "/wrong"
    args = ["run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", wrong, "--concurrency", "4"]
    done = run_cli(*args, "--api-key-env", "OPENAI_API_KEY", "--quiet")
    assert done.returncode == 3, done.stderr
    assert "404" in done.stderr and wrong in done.stderr
    assert not out.exists() or read_jsonl(out) == []  # every request is left for --resume
