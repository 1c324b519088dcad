"""The run's budget: a request goes only when its estimated cost fits beside what is spent and held."""

from __future__ import annotations

import asyncio

import pytest

from llmgather.budget import Budget, to_units


def test_requests_are_counted_and_never_exceed_the_limit() -> None:
    budget = Budget(max_requests=2)
    assert budget.try_take() and budget.try_take()
    assert budget.try_take() is False and budget.requests == 2
    assert budget.exhausted() == "the budget of 2 requests is spent"


def test_a_request_waits_while_what_is_held_could_still_leave_room() -> None:
    budget = Budget(max_cost_usd=1.0)
    assert budget.try_take(0.6) is True
    assert budget.try_take(0.6) is None  # 0.6 held: it fits only if the first costs less than estimated
    budget.release(to_units(0.6))
    budget.charge(0.3)
    assert budget.try_take(0.6) is True and budget.held_usd == pytest.approx(0.6)


def test_with_nothing_held_a_request_that_does_not_fit_ends_the_run() -> None:
    budget = Budget(max_cost_usd=1.0)
    budget.charge(0.7)
    assert budget.try_take(0.4) is False and budget.requests == 0
    reason = budget.exhausted()
    assert reason is not None and "too little left" in reason and "$0.4000" in reason


def test_the_first_request_goes_whatever_its_estimate() -> None:
    # Before any completion is seen the estimate is cautious; it must not stop a run before it starts.
    budget = Budget(max_cost_usd=0.01)
    assert budget.try_take(5.0) is True


def test_spent_up_to_the_limit_is_exhausted() -> None:
    budget = Budget(max_cost_usd=1.0)
    budget.charge(1.0)
    assert budget.try_take(0.0) is False
    assert budget.exhausted() == "the budget of $1 is spent ($1.0000)"


def test_waiters_wake_when_a_hold_is_released() -> None:
    async def scenario() -> list[float | None]:
        budget = Budget(max_cost_usd=1.0)
        assert await budget.take(lambda: 0.6)
        waiting = [asyncio.create_task(budget.take(lambda: 0.6)), asyncio.create_task(budget.take(lambda: 0.6))]
        await asyncio.sleep(0)
        assert not any(task.done() for task in waiting)
        budget.release(to_units(0.6))
        budget.charge(0.3)  # 0.7 left: one of the two fits, then the other waits on it
        done, pending = await asyncio.wait(waiting, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1
        budget.release(to_units(0.6))
        budget.charge(0.5)  # 0.8 spent, nothing held: the second cannot fit and is refused
        return [task.result() for task in (await asyncio.wait(waiting, timeout=1.0))[0]]

    assert sorted(asyncio.run(scenario()), key=str) == [to_units(0.6), None]


@pytest.mark.parametrize("bad", [{"max_cost_usd": 0.0}, {"max_requests": 0}])
def test_a_budget_of_nothing_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Budget(**bad)  # type: ignore[arg-type]
