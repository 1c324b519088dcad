"""The breaker judges the provider by the latest-sent attempts, however late their answers arrive."""

from __future__ import annotations

import asyncio
import random

from llmgather.errors import ServerError
from llmgather.limits.breaker import WINDOW, CircuitBreaker

DOWN = ServerError("down", status=503)


def test_late_answers_to_attempts_sent_before_an_outage_do_not_hold_it_closed() -> None:
    async def scenario() -> int:
        breaker = CircuitBreaker()
        healthy = [breaker.number() for _ in range(WINDOW)]
        for attempt in healthy[: WINDOW // 2]:
            breaker.record(outage=None, probe=False, attempt=attempt)
        # The outage begins; the answers to the other half of the healthy attempts straggle in among its
        # failures, one after every second failure, as a busy machine reads them.
        stragglers = healthy[WINDOW // 2 :]
        failures = 0
        while not breaker.is_open:
            breaker.record(outage=DOWN, probe=False, attempt=breaker.number())
            failures += 1
            if failures % 2 == 0 and stragglers:
                breaker.record(outage=None, probe=False, attempt=stragglers.pop(0))
        return failures

    # Opened by the failures of the attempts sent since the outage began: four-fifths of a window of them.
    assert asyncio.run(scenario()) == 16


def test_a_steady_share_of_errors_does_not_open_it() -> None:
    async def scenario() -> bool:
        breaker = CircuitBreaker()
        chance = random.Random(7)
        in_flight: list[int] = []
        for _ in range(5000):
            in_flight.append(breaker.number())
            if len(in_flight) > 50:  # answers arrive in any order
                attempt = in_flight.pop(chance.randrange(len(in_flight)))
                failed = chance.random() < 0.3
                breaker.record(outage=DOWN if failed else None, probe=False, attempt=attempt)
        return breaker.is_open

    assert not asyncio.run(scenario())
