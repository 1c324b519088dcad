"""What a provider's answers teach one limiter: the limits its headers announce, the pace its 429s allow
(AIMD, see `adaptive`), one shared cool-down, and whether the first answer, which says the limits, has come.

With no limit given, the first answer's headers say what the limits are; until it comes, at most
`INITIAL_WINDOW` requests go. Holding all but one back would cost every run a full round trip; letting all of
`concurrency` go blind could be a burst of 429s. With any limit given, nothing waits for a first answer: a
request's completion is reserved at its `max_tokens` (or a generous default) until its answer says what it used.

A 429 that carries no rate-limit header while nearly everything sent alongside it goes through is that request's
own (a prompt the provider refuses whatever the pace): it neither holds the others back nor steps the rate down.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping

from llmgather.limits.adaptive import Aimd, AnswerShare, Recent
from llmgather.limits.headers import Announced, Kind, announced, has_limit_headers
from llmgather.limits.pace import Cost

# A burst of 429s from one moment is one signal, not many: step down at most this often.
DECREASE_EVERY_S = 1.0
SEND_RATE_WINDOW_S = 10.0
# Requests let go before any answer has told the limits. Providers quantize a per-minute limit to the
# second (6,000 rpm is 100 a second), so this many fit any limit from 6,000 rpm up; under a smaller one the
# excess is refused once, and those 429s carry the headers that teach the limit.
INITIAL_WINDOW = 100
# Under a known limit, a lone 429 holds the others this long at most (see `Learner.refused`).
LONE_HOLD_S = 0.1
# A 429 without rate-limit headers is its own request's problem when, in the current and the previous second,
# fewer than this many were refused (a limit reached refuses many at once: everything sent past it) ...
OWN_REFUSALS_BELOW = 3
# ... or when at most this share of what was sent then was refused.
OWN_REFUSAL_SHARE = 0.05


class Learner:
    def __init__(
        self,
        told: Mapping[Kind, float | None],
        *,
        learn: bool,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self.learn = learn
        self.rates = tuple(Aimd(told.get(kind)) for kind in Kind)
        self.requests = self.rates[Kind.REQUESTS]
        self.tokens = self.rates[Kind.TOKENS]
        self.resume_at = 0.0
        """Nothing goes before this (a Retry-After)."""
        self.paced_with_others = False
        """Paced by a shared schedule (`shared`): a known limit is kept by the group, not stepped down from."""
        self.cool_downs = 0
        self._last_decrease = -math.inf
        self._last_429 = -math.inf
        self._answers = AnswerShare()
        self._sent_lately = Recent()
        self._refused_lately = Recent()
        self._last_growth = clock()
        self.sent: deque[tuple[float, Cost]] = deque()
        """(when, cost) of what went in the last seconds, kept while a rate is unknown."""
        # With no limit given, the first answer's headers say what they are: INITIAL_WINDOW requests go before it.
        self.awaiting_first_answer = learn and all(value is None for value in told.values())
        self._unpaced_left = INITIAL_WINDOW
        self._first_answered = asyncio.Event()

    async def first_answer(self) -> None:
        """Return at once while requests may still go before the first answer; else wait for it."""
        while self.awaiting_first_answer:
            if self._unpaced_left > 0:
                self._unpaced_left -= 1
                return
            await self._first_answered.wait()

    def answered(self, headers: Mapping[str, str], *, ok: bool) -> dict[Kind, Announced]:
        """An attempt ended: learn what its answer's headers announce (and return it); a clean answer lets the
        rates grow."""
        heard = announced(headers, self._wall()) if self.learn and headers else {}
        for kind, seen in heard.items():
            if seen.limit is not None:
                self.rates[kind].learn(seen.limit)
        if ok:
            now = self._clock()
            self._answers.add(now, refused=False)
            clean_s = now - max(self._last_growth, self._last_decrease)
            if clean_s > 0.05:  # grow in small steps, not on every answer
                since_decrease_s = now - self._last_decrease
                for rate in self.rates:
                    rate.increase(clean_s, since_decrease_s)
                self._last_growth = now
        if self.awaiting_first_answer:
            self.awaiting_first_answer = False
            self._first_answered.set()
        return heard

    def heard_elsewhere(self, kind: Kind, limit: float) -> None:
        """Another process sharing the limit learned it (or was told it): as good as a first answer."""
        self.rates[kind].learn(limit)
        if self.awaiting_first_answer:
            self.awaiting_first_answer = False
            self._first_answered.set()

    def refused(
        self, retry_after: float | None, headers: Mapping[str, str] | None = None, *, shared: bool = False
    ) -> bool:
        """A 429: hold every request until Retry-After passes; True if the rates stepped down too.
        Nothing of the kind when the 429 is the request's own (see the module's docstring)."""
        now = self._clock()
        self._refused_lately.add(now)
        if not shared and self._own_refusal(now, headers or {}):
            return False
        self._answers.add(now, refused=True)
        previous, self._last_429 = self._last_429, now
        # Under a known limit a lone 429 is arrival jitter at the edge of the provider's window: the others
        # are held only while that passes (the refused request itself waits its whole Retry-After), not for a
        # Retry-After in whole seconds (Anthropic's), which cost a second of the limit each time. 429s that
        # come again within a second mean the limit is not all ours: the whole wait, and a step down.
        lone = now - previous > DECREASE_EVERY_S and any(rate.ceiling is not None for rate in self.rates)
        if retry_after is not None:
            self.cool_down(min(retry_after, LONE_HOLD_S) if lone else retry_after)
        if lone or now - self._last_decrease < DECREASE_EVERY_S:
            return False
        if self.paced_with_others and any(rate.ceiling is not None for rate in self.rates):
            # A shared schedule (see `shared`) keeps the group under the known limit: its 429s are arrival jitter
            # or a store lost and found, not a pace too high, and one process slowing down slows all of them.
            return False
        self._last_decrease = now
        self.requests.decrease(self._sent_per_minute(now), self._answers.accepted())
        for rate in self.rates[Kind.TOKENS :]:
            if rate.rate is not None:
                rate.decrease(rate.rate)
        return True

    def _own_refusal(self, now: float, headers: Mapping[str, str]) -> bool:
        if has_limit_headers(headers):
            return False
        refused = self._refused_lately.count(now)
        return refused < OWN_REFUSALS_BELOW or refused <= OWN_REFUSAL_SHARE * self._sent_lately.count(now)

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this endpoint and model until `seconds` from now (one shared wait)."""
        now = self._clock()
        resume_at = now + seconds
        if resume_at > self.resume_at:
            if now >= self.resume_at:
                self.cool_downs += 1
            self.resume_at = resume_at

    def note_sent(self, cost: Cost) -> None:
        now = self._clock()
        self._sent_lately.add(now)
        # Kept while a rate is unknown: to seed its window once learned, and to know where to step down
        # from when a 429 comes first.
        rates = self.rates
        if rates[0].rate is None or rates[1].rate is None or rates[2].rate is None or rates[3].rate is None:
            self.sent.append((now, cost))
            while self.sent[0][0] < now - SEND_RATE_WINDOW_S:
                self.sent.popleft()

    def _sent_per_minute(self, now: float) -> float:
        if len(self.sent) < 2:
            return float(len(self.sent)) * 60.0
        span = max(1.0, now - self.sent[0][0])
        return len(self.sent) / span * 60.0
