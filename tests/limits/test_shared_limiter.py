"""The shared limiter on a virtual clock, over the Python twin of the store (unit level: no network), and the Lua
script's numbers against a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis_server import RedisServer

from llmgather.limits.pace import Cost
from llmgather.limits.shared import SharedLimiter, SharedLink
from llmgather.limits.shared_redis import RedisStore
from llmgather.limits.shared_state import Ask, Grant, QuotaId, SharedState

QUOTA = QuotaId("http://provider/v1", "openai/m")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class TwinStore:
    """The store's algorithm in process, on the test's clock."""

    where = "the twin"

    def __init__(self, clock: Clock) -> None:
        self.state = SharedState()
        self.clock = clock
        self.asks: list[Ask] = []

    async def admit(self, quota: QuotaId, ask: Ask) -> Grant:
        self.asks.append(ask)
        return self.state.admit(quota.key, ask, self.clock())

    async def ping(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _limiter(clock: Clock, store: TwinStore, rpm: float | None = 600.0) -> SharedLimiter:
    return SharedLimiter(SharedLink(store, sleep=clock.sleep), QUOTA, rpm, clock=clock, sleep=clock.sleep)


def test_a_slot_booked_before_a_429s_wait_is_given_back_and_asked_again() -> None:
    async def go() -> tuple[float, list[Ask]]:
        clock = Clock()
        store = TwinStore(clock)
        limiter = _limiter(clock, store)
        limiter.settle(await limiter.admit(Cost()), Cost())  # the first goes at once; the next is 0.1 s on
        waiting = asyncio.ensure_future(limiter.admit(Cost()))
        await asyncio.sleep(0)
        limiter.cool_down(5.0)  # a 429 elsewhere in this process asks every request to wait 5 s
        ticket = await waiting
        assert ticket.shared
        return clock.now, store.asks

    sent_at, asks = asyncio.run(asyncio.wait_for(go(), timeout=10))
    assert sent_at >= 1005.0, "it went in the slot booked before the wait"
    assert any(ask.corrections[0] == -1 for ask in asks), "the slot it did not use was not given back"


def test_with_no_limit_known_and_no_headers_requests_go_unpaced_after_the_first_answer() -> None:
    async def go() -> int:
        clock = Clock()
        store = TwinStore(clock)
        limiter = _limiter(clock, store, rpm=None)
        first = await limiter.admit(Cost())
        limiter.observe({}, ok=True)  # answered, and no header said any limit
        limiter.settle(first, Cost())
        for _ in range(500):  # more than the opening allowance: none may wait for a limit nobody will learn
            limiter.settle(await limiter.admit(Cost()), Cost())
        return len(store.asks)

    assert asyncio.run(asyncio.wait_for(go(), timeout=10)) == 1  # it waited for ever for the allowance


def test_the_opening_allowance_comes_again_a_second_after_it_was_spent() -> None:
    state = SharedState()
    granted = [state.admit("q", Ask("a", amounts=(1, 0, 0, 0), blind=True), 10.0).admitted for _ in range(150)]
    assert granted.count(True) == 100
    assert state.admit("q", Ask("a", blind=True), 10.5).admitted is False
    assert state.admit("q", Ask("a", blind=True), 11.01).admitted is True


def test_the_lua_script_keeps_a_single_token_at_a_fast_pace(redis_server: RedisServer) -> None:
    """At 12,000 tokens a second one token is 83 us: a Unix time written with 14 digits (100 us) loses it."""

    async def go() -> tuple[float, float]:
        store = RedisStore.connect(redis_server.url)
        try:
            await store.admit(QUOTA, Ask("a", amounts=(1, 1, 0, 0), rates=(100.0, 12_000.0, 0, 0), max_wait_s=1.0))
            from redis.asyncio import Redis

            client = Redis.from_url(redis_server.url)
            fields = await client.hgetall("llmgather:quota:" + QUOTA.key)
            await client.aclose()
            return float(fields[b"tat2"]), float(fields[b"seen"])
        finally:
            await store.aclose()

    tat, seen = asyncio.run(go())
    assert tat - seen == pytest.approx(1 / 12_000, abs=5e-7)  # a double near 1.8e9 resolves 2.4e-7 s


def test_closing_the_store_closes_its_connections(redis_server: RedisServer) -> None:
    async def go() -> int:
        store = RedisStore.connect(redis_server.url)
        await store.ping()
        await store.aclose()
        from redis.asyncio import Redis

        client = Redis.from_url(redis_server.url)
        clients = await client.client_list()
        await client.aclose()
        return len(clients)

    deadline = time.monotonic() + 5
    while (count := asyncio.run(go())) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count == 1, "the store's own connections are still open"
