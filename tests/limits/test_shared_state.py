"""The shared admission state: `SharedState` (Python) on a fixed clock, and `admit.lua` (Redis) held to it.

The twins are given the same asks one after the other; each answers on its own clock (Redis's TIME, the test's
time.time()), a few milliseconds apart, so rates are slow enough that every wait is a whole number of seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import astuple
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_server import RedisServer

from llmgather.limits.shared_redis import RedisStore
from llmgather.limits.shared_state import BLIND_POLL_S, INITIAL_WINDOW, Ask, Grant, QuotaId, SharedState

QUOTA = QuotaId("http://127.0.0.1:1/v1", "fake")
CLOCK_SLACK_S = 0.25
"""How far the twins' waits may differ: they read their clocks milliseconds apart."""
T0 = 1_000_000.0


def paced(member: str, *, rpm: float = 60.0, max_wait_s: float = 60.0, **fields: Any) -> Ask:
    """A request from `member` paced at `rpm` requests per minute (one a second by default)."""
    return Ask(member, amounts=(1, 0, 0, 0), rates=(rpm / 60.0, 0.0, 0.0, 0.0), max_wait_s=max_wait_s, **fields)


def blind(member: str) -> Ask:
    return Ask(member, amounts=(1, 0, 0, 0), blind=True)


# -- SharedState alone, on a fixed clock ----------------------------------------------------------------------


def test_asks_get_slots_in_the_order_they_came_whoever_asks() -> None:
    state = SharedState()
    members = ["a", "b", "c", "a", "a", "b", "c", "c"]
    waits = [state.admit("q", paced(member, rpm=120), T0).wait_s for member in members]
    assert waits == [i * 0.5 for i in range(len(members))]


def test_a_later_ask_never_goes_before_an_earlier_one() -> None:
    state = SharedState()
    arrivals = [T0 + i * 0.01 for i in range(50)]
    slots = [now + state.admit("q", paced(f"m{i % 3}", rpm=600), now).wait_s for i, now in enumerate(arrivals)]
    assert slots == sorted(slots)
    assert all(later - earlier == pytest.approx(0.1) for earlier, later in itertools.pairwise(slots))


@settings(max_examples=60, deadline=None)
@given(
    rpm=st.sampled_from([60, 120, 600, 3000, 6000]),
    arrivals=st.lists(st.tuples(st.floats(0, 5), st.integers(0, 3)), min_size=1, max_size=120),
)
def test_no_second_gets_more_than_the_rate(rpm: int, arrivals: list[tuple[float, int]]) -> None:
    state = SharedState()
    slots = []
    for offset, member in sorted(arrivals):
        grant = state.admit("q", paced(f"m{member}", rpm=rpm), T0 + offset)
        assert grant.admitted
        slots.append(T0 + offset + grant.wait_s)
    rate = rpm / 60
    for start in slots:  # the busiest one-second windows start at a slot
        assert sum(1 for slot in slots if start <= slot < start + 1 - 1e-9) <= rate


def test_tokens_in_any_second_stay_within_the_rate_but_for_the_last_request() -> None:
    state = SharedState()
    tokens, slots = [40, 10, 70, 5, 90, 30] * 5, []
    for amount in tokens:
        ask = Ask("a", amounts=(1, amount, 0, 0), rates=(100.0, 100.0, 0.0, 0.0), max_wait_s=600)
        slots.append(T0 + state.admit("q", ask, T0).wait_s)
    for first, start in enumerate(slots):
        inside = [amount for slot, amount in zip(slots, tokens, strict=True) if start <= slot < start + 1 - 1e-9]
        assert sum(inside) - inside[-1] < 100, first


def test_the_opening_allowance_is_one_for_the_whole_group() -> None:
    state = SharedState()
    grants = [state.admit("q", blind(f"m{i % 4}"), T0) for i in range(INITIAL_WINDOW + 1)]
    assert all(g.admitted and g.wait_s == 0 for g in grants[:-1])
    assert not grants[-1].admitted and grants[-1].wait_s == pytest.approx(BLIND_POLL_S)


def test_a_published_ceiling_sends_blind_askers_to_learn_it() -> None:
    state = SharedState()
    state.admit("q", paced("a", ceilings=(60.0, 0.0, 0.0, 0.0)), T0)
    grant = state.admit("q", blind("b"), T0 + 0.1)
    assert not grant.admitted and grant.wait_s == 0
    assert grant.ceilings == (60.0, 0.0, 0.0, 0.0)
    assert grant.members == 2


def test_an_ask_beyond_its_max_wait_is_refused_and_books_nothing() -> None:
    state = SharedState()
    for _ in range(4):
        state.admit("q", paced("a"), T0)
    refused = state.admit("q", paced("b", max_wait_s=2.5), T0)
    assert (refused.admitted, refused.wait_s, refused.granted) == (False, 4.0, 4)
    assert state.admit("q", paced("b"), T0).wait_s == 4.0


def test_a_hold_keeps_every_slot_after_it_and_corrections_give_unused_slots_back() -> None:
    state = SharedState()
    for _ in range(3):
        state.admit("q", paced("a"), T0)  # slots 0, 1, 2
    freed = state.admit("q", paced("b", corrections=(-2, 0, 0, 0)), T0)  # two of them never sent
    assert freed.wait_s == 1.0
    held = state.admit("q", paced("a", hold_s=5.0), T0 + 0.5)
    assert held.cooling_s == pytest.approx(5.0) and held.wait_s == pytest.approx(5.0)
    assert state.admit("q", paced("c"), T0 + 0.5).wait_s == pytest.approx(6.0)


def test_what_went_blind_counts_once_the_schedule_starts() -> None:
    state = SharedState()
    for _ in range(INITIAL_WINDOW):
        assert state.admit("q", blind("a"), T0).admitted
    first = state.admit("q", paced("b", rpm=6000), T0 + 0.25)  # 100 requests at 100 a second: a second's worth
    assert first.wait_s == pytest.approx(0.75)


def test_a_quota_nobody_asked_about_for_long_is_forgotten() -> None:
    state = SharedState()
    state.admit("q", paced("a", ceilings=(60.0, 0.0, 0.0, 0.0)), T0)
    assert state.admit("q", blind("a"), T0 + 3600).admitted


# -- admit.lua held to SharedState ----------------------------------------------------------------------------


class Twins:
    """The same asks to Redis and to a SharedState, answered side by side."""

    def __init__(self, url: str) -> None:
        self.redis = RedisStore.connect(url)
        self.python = SharedState()

    async def ask(self, quota: QuotaId, ask: Ask) -> tuple[Grant, Grant]:
        from_redis = await self.redis.admit(quota, ask)
        return from_redis, self.python.admit(quota.key, ask, time.time())


def same(redis: Grant, python: Grant) -> bool:
    """Equal, but for times, which may differ by the moments between the two clocks' readings."""
    for got, want in zip(astuple(redis), astuple(python), strict=True):
        if isinstance(want, tuple):
            if not all(math.isclose(g, w, abs_tol=1e-9) for g, w in zip(got, want, strict=True)):
                return False
        elif isinstance(want, float):
            if abs(got - want) > CLOCK_SLACK_S:
                return False
        elif got != want:
            return False
    return True


OPENING = QuotaId("http://127.0.0.1:2/v1", "fake")
OPENING_STEPS = [
    *[blind(f"m{i % 3}") for i in range(INITIAL_WINDOW)],  # the opening allowance, spent
    blind("m0"),  # refused: ask again soon
    paced("m1", rpm=6000, ceilings=(6000.0, 0.0, 0.0, 0.0)),  # someone learned the limit and says so
    blind("m2"),  # refused at once, and told the limit
    paced("m2", rpm=6000),
]
"""What went blind counts once the schedule starts: 100 requests at 6,000 rpm hold it for a second."""
STEPS = [
    paced("m1", ceilings=(60.0, 0.0, 0.0, 0.0)),
    blind("m2"),
    paced("m2"),
    paced("m0"),
    paced("m1", max_wait_s=1.5),  # its slot (3 s) is too far: refused, nothing booked
    paced("m1"),
    paced("m0", corrections=(-1, 0, 0, 0)),  # one granted request was never sent
    paced("m2", hold_s=4.0),  # a 429: everybody waits
    paced("m1"),
    Ask("m0", amounts=(1, 30, 0, 0), rates=(1.0, 10.0, 0.0, 0.0), max_wait_s=60.0),  # tokens paced too
    Ask("m1", amounts=(1, 30, 0, 0), rates=(1.0, 10.0, 0.0, 0.0), max_wait_s=60.0),
    Ask("m2", amounts=(1, 0, 0, 0), rates=(1.0, 10.0, 0.0, 0.0), ceilings=(60.0, 600.0, 0.0, 0.0), max_wait_s=60.0),
]
SCENARIO = [(OPENING, ask) for ask in OPENING_STEPS] + [(QUOTA, ask) for ask in STEPS]


def test_redis_grants_what_shared_state_grants(redis_server: RedisServer) -> None:
    async def go() -> list[tuple[int, Ask, Grant, Grant]]:
        twins = Twins(redis_server.url)
        try:
            return [(step, ask, *await twins.ask(quota, ask)) for step, (quota, ask) in enumerate(SCENARIO)]
        finally:
            await twins.redis.aclose()

    steps = asyncio.run(go())
    differ = [(step, ask, redis, python) for step, ask, redis, python in steps if not same(redis, python)]
    assert not differ, differ[0]
    # and the scenario did what it says: it is not two twins agreeing on nothing
    opening, grants = [g for *_, g in steps[: len(OPENING_STEPS)]], [g for *_, g in steps[len(OPENING_STEPS) :]]
    assert [g.admitted for g in opening] == [True] * INITIAL_WINDOW + [False, True, False, True]
    waits = [g.wait_s for g in opening[INITIAL_WINDOW:]]
    assert waits == pytest.approx([BLIND_POLL_S, 1.0, 0.0, 1.0], abs=CLOCK_SLACK_S)  # less the time asking took
    assert [g.admitted for g in grants] == [True, False, True, True, False] + [True] * 7
    assert [round(g.wait_s) for g in grants] == [0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 9, 10]
    assert grants[-1].ceilings == (60.0, 600.0, 0.0, 0.0) and grants[-1].members == 3
