"""Learning a provider's limits: from its rate-limit headers, and from its 429s when it sends none.

Pure: no clock of its own and no I/O. The limiter feeds it what happened and paces to what it says.
"""

from __future__ import annotations

# On a 429 the rate steps down to this share of itself. Under a known ceiling a 429 is most likely
# jitter or another client on the same key, so the step is small; with nothing known it is larger.
DECREASE_UNDER_CEILING = 0.9
DECREASE = 0.7
# Under a ceiling, when more than a tenth of the answers in the last two seconds were 429s the limit is
# shared: the rate steps down to the share of answers that got through (what this client is in fact
# given), but never below half at once.
DEEPEST_DECREASE = 0.5
# While answers are clean the rate grows back by this share of itself per second (with no ceiling known)
# or of the ceiling: a step down is won back in about a second.
RECOVERY_PER_S = 0.1
# Once the limit is seen to be shared (another process on the key, another model behind one limit), and
# until the rate is back at the ceiling, it grows by this share of the ceiling per second, so that clients
# sharing a limit settle just under it instead of each pacing at the whole of it and colliding every
# second ...
SHARED_RECOVERY_PER_S = 0.01
# ... and twice that for every this many seconds without a step down: when the other client has gone, the
# rate is back at the ceiling in about ten seconds.
SHARED_RECOVERY_DOUBLING_S = 2.0
# Never pace slower than this many requests a minute, whatever the 429s say.
FLOOR_PER_MINUTE = 6.0


class Aimd:
    """The per-minute rate to pace at: additive increase while answers are clean, multiplicative decrease on 429.

    The ceiling is the lower of the user's limit and the provider's announced one; learning never goes
    above it. With no ceiling and no rate yet, there is nothing to pace: `rate` is None until a 429.
    """

    __slots__ = ("_provider", "_user", "rate", "shared")

    def __init__(self, user_limit: float | None) -> None:
        self._user = user_limit
        self._provider: float | None = None
        self.rate: float | None = user_limit
        self.shared = False
        """Whether 429s have shown that others spend the same limit (until the rate is back at the ceiling)."""

    @property
    def told(self) -> float | None:
        """The user's limit, if one was given."""
        return self._user

    @property
    def ceiling(self) -> float | None:
        if self._user is None:
            return self._provider
        return self._user if self._provider is None else min(self._user, self._provider)

    def learn(self, provider_limit: float) -> None:
        """The provider announced its limit: pace to it (under the user's), unless a 429 has us below it."""
        was_at_ceiling = self.rate is None or self.rate >= (self.ceiling or 0.0)
        self._provider = provider_limit
        ceiling = self.ceiling
        assert ceiling is not None
        if was_at_ceiling or self.rate is None or self.rate > ceiling:
            self.rate = ceiling

    def decrease(self, observed_per_minute: float, accepted_share: float | None = None) -> None:
        """A 429: step down from the current rate, or from what was being sent if no rate was set.

        `accepted_share`: of the answers just seen, the share that were not 429s, if enough were seen."""
        base = self.rate if self.rate is not None else observed_per_minute
        if self.ceiling is None:
            factor = DECREASE
        elif accepted_share is None:
            factor = DECREASE_UNDER_CEILING
        else:
            factor = min(DECREASE_UNDER_CEILING, max(DEEPEST_DECREASE, accepted_share))
            self.shared = self.shared or accepted_share < DECREASE_UNDER_CEILING
        self.rate = max(FLOOR_PER_MINUTE, base * factor)

    def increase(self, clean_s: float, since_decrease_s: float = 0.0) -> None:
        """`clean_s` seconds passed with clean answers, `since_decrease_s` since the last step down: win some
        rate back, never above the ceiling."""
        if self.rate is None or clean_s <= 0:
            return
        ceiling = self.ceiling
        if ceiling is None:
            self.rate *= 1.0 + RECOVERY_PER_S * min(clean_s, 1.0)
        elif self.rate < ceiling:
            speed = RECOVERY_PER_S
            if self.shared:
                speed = SHARED_RECOVERY_PER_S * 2.0 ** (min(since_decrease_s, 60.0) / SHARED_RECOVERY_DOUBLING_S)
            self.rate = min(ceiling, self.rate + ceiling * speed * clean_s)
            self.shared = self.shared and self.rate < ceiling


class AnswerShare:
    """Of the answers in the current and the previous whole second, the share that were not 429s."""

    __slots__ = ("_earlier", "_now", "_second")

    FEWEST = 10  # answers: below this a share says little

    def __init__(self) -> None:
        self._second = -1
        self._now = [0, 0]  # accepted, refused
        self._earlier = [0, 0]

    def add(self, now: float, *, refused: bool) -> None:
        second = int(now)
        if second != self._second:
            self._earlier = self._now if second == self._second + 1 else [0, 0]
            self._now = [0, 0]
            self._second = second
        self._now[refused] += 1

    def accepted(self) -> float | None:
        accepted = self._now[0] + self._earlier[0]
        total = accepted + self._now[1] + self._earlier[1]
        return accepted / total if total >= self.FEWEST else None


class Recent:
    """How many in the current and the previous whole second."""

    __slots__ = ("_earlier", "_now", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._now = 0
        self._earlier = 0

    def add(self, now: float) -> None:
        self._roll(int(now))
        self._now += 1

    def count(self, now: float) -> int:
        self._roll(int(now))
        return self._now + self._earlier

    def _roll(self, second: int) -> None:
        if second != self._second:
            self._earlier = self._now if second == self._second + 1 else 0
            self._now = 0
            self._second = second
