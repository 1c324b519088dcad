"""What a provider's answers teach one limiter: the limits its headers announce, the pace its 429s allow
(AIMD, see `adaptive`), one shared cool-down, and whether the first answer, which says the limits, has come.

With no limit given, the first answer's headers say what the limits are; until it comes, at most
`INITIAL_WINDOW` requests go. Holding all but one back would cost every run a full round trip; letting all of
`concurrency` go blind could be a burst of 429s. With a token budget given, one request goes first: its answer
says how long completions run, for estimating the rest.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping

from llmgather.limits.adaptive import Aimd, AnswerShare, limits_from_headers

# A burst of 429s from one moment is one signal, not many: step down at most this often.
DECREASE_EVERY_S = 1.0
SEND_RATE_WINDOW_S = 10.0
# Requests let go before any answer has told the limits. Providers quantize a per-minute limit to the
# second (6,000 rpm is 100 a second), so this many fit any limit from 6,000 rpm up; under a smaller one the
# excess is refused once, and those 429s carry the headers that teach the limit.
INITIAL_WINDOW = 100


class Learner:
    def __init__(self, rpm: float | None, tpm: float | None, *, learn: bool, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.learn = learn
        self.requests = Aimd(rpm)
        self.tokens = Aimd(tpm)
        self.resume_at = 0.0
        """Nothing goes before this (a Retry-After)."""
        self.cool_downs = 0
        self._last_decrease = -math.inf
        self._last_429 = -math.inf
        self._answers = AnswerShare()
        self._last_growth = clock()
        self.sent: deque[tuple[float, int]] = deque()
        """(when, tokens) of what went in the last seconds, kept while a rate is unknown."""
        # The first answer is awaited when it is needed to pace the rest: the limits were not given (then
        # INITIAL_WINDOW requests go before it), or a token budget needs to know how long completions run
        # (then one goes).
        self.awaiting_first_answer = (learn and rpm is None and tpm is None) or tpm is not None
        self._unpaced_left = 1 if tpm is not None else INITIAL_WINDOW
        self._first_answered = asyncio.Event()

    async def first_answer(self) -> None:
        """Return at once while requests may still go before the first answer; else wait for it."""
        while self.awaiting_first_answer:
            if self._unpaced_left > 0:
                self._unpaced_left -= 1
                return
            await self._first_answered.wait()

    def answered(self, headers: Mapping[str, str], *, ok: bool) -> None:
        """An attempt ended: learn what its answer's headers announce; a clean answer lets the rate grow."""
        if self.learn and headers:
            announced = limits_from_headers(headers)
            if announced is not None:
                if announced.rpm is not None:
                    self.requests.learn(announced.rpm)
                if announced.tpm is not None:
                    self.tokens.learn(announced.tpm)
        if ok:
            now = self._clock()
            self._answers.add(now, refused=False)
            clean_s = now - max(self._last_growth, self._last_decrease)
            if clean_s > 0.05:  # grow in small steps, not on every answer
                since_decrease_s = now - self._last_decrease
                self.requests.increase(clean_s, since_decrease_s)
                self.tokens.increase(clean_s, since_decrease_s)
                self._last_growth = now
        if self.awaiting_first_answer:
            self.awaiting_first_answer = False
            self._first_answered.set()

    def refused(self, retry_after: float | None) -> bool:
        """A 429: hold every request until Retry-After passes; True if the rates stepped down too."""
        if retry_after is not None:
            self.cool_down(retry_after)
        now = self._clock()
        self._answers.add(now, refused=True)
        previous, self._last_429 = self._last_429, now
        if now - self._last_decrease < DECREASE_EVERY_S:
            return False
        if self.requests.ceiling is not None and now - previous > DECREASE_EVERY_S:
            # Under a known limit a lone 429 is arrival jitter at the edge of the window: the cool-down
            # is enough. 429s that come again within a second mean the limit is not all ours.
            return False
        self._last_decrease = now
        self.requests.decrease(self._sent_per_minute(now), self._answers.accepted())
        if self.tokens.rate is not None:
            self.tokens.decrease(self.tokens.rate)
        return True

    def cool_down(self, seconds: float) -> None:
        """Hold every request to this endpoint and model until `seconds` from now (one shared wait)."""
        now = self._clock()
        resume_at = now + seconds
        if resume_at > self.resume_at:
            if now >= self.resume_at:
                self.cool_downs += 1
            self.resume_at = resume_at

    def note_sent(self, tokens: int) -> None:
        # Kept while a rate is unknown: to seed its window once learned, and to know where to step down
        # from when a 429 comes first.
        if self.requests.rate is None or self.tokens.rate is None:
            now = self._clock()
            self.sent.append((now, tokens))
            while self.sent[0][0] < now - SEND_RATE_WINDOW_S:
                self.sent.popleft()

    def _sent_per_minute(self, now: float) -> float:
        if len(self.sent) < 2:
            return float(len(self.sent)) * 60.0
        span = max(1.0, now - self.sent[0][0])
        return len(self.sent) / span * 60.0
