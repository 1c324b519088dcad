"""One provider quota shared by many processes: what they ask of the shared state, what it grants, and the
state itself, kept in Python for a store with no Lua (the Ray actor) and as the twin the Lua script is held to.

The state paces each budget (requests, tokens together, tokens in, tokens out) by a virtual schedule (GCRA with
no burst): a budget's `tat` is when its next unit may go, and a request takes the earliest moment every budget
it uses allows, pushing each `tat` on by its amount over the rate. A request is granted a slot in that schedule,
so waiting processes are served in the order they asked, whoever asks most often; one round trip per request.
No burst means no second ever holds more than its share of the rate: the schedule keeps the one-second window.

Beside the schedule it holds what every process should know: the limits learned from headers (or told), the
cool-down after a 429, who shares the quota (seen in the last `MEMBER_TTL_S`), how many requests it granted, and,
while nobody knows any limit, the opening allowance that lets the first requests go before any answer says
what the limits are (one allowance for the whole group, not one per process).

`admit.lua` is the same algorithm for Redis; `tests/limits/test_shared_state.py` holds the two to each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

KINDS = 4
"""Budgets, in `headers.Kind`'s order: requests, tokens in and out together, tokens in, tokens out."""
INITIAL_WINDOW = 100
"""Requests the whole group may send before anyone knows a limit (the local `learning.INITIAL_WINDOW`)."""
MEMBER_TTL_S = 10.0
"""A process that has not asked for this long no longer counts as sharing."""
STATE_TTL_S = 600
"""A quota nobody has asked about for this long is forgotten (its learned limits with it)."""
BLIND_POLL_S = 0.05
"""How soon a process with no limit known asks again once the opening allowance is spent."""

Four = tuple[float, float, float, float]
FourInts = tuple[int, int, int, int]
NOTHING: Four = (0.0, 0.0, 0.0, 0.0)
NONE: FourInts = (0, 0, 0, 0)


class Unreachable(ConnectionError):
    """The store did not answer (down, unreachable, too slow): the limiter paces alone until it does."""


class Misconfigured(Unreachable):
    """The store answers, but refuses this process as the URL gives it (no password, a wrong one): a mistake that
    waiting will not mend, so a run refuses it at the start even with `--shared-optional`. Mid-run it is an outage
    like any other (a password changed under a running job)."""


@dataclass(frozen=True, slots=True)
class QuotaId:
    """One provider endpoint and model: the quota its processes share."""

    endpoint: str
    model: str
    account: str = ""
    """A digest of the API key (never the key): two accounts on one endpoint have two quotas."""

    @property
    def key(self) -> str:
        """The same from every process and host."""
        return hashlib.sha256(f"{self.endpoint}|{self.model}|{self.account}".encode()).hexdigest()[:24]

    @staticmethod
    def account_of(api_key: str | None) -> str:
        return hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else ""


@dataclass(slots=True)
class Ask:
    """One request's admission, with whatever this process has to tell the others since it last asked."""

    member: str
    """Who asks: host, pid and a random tag, so that processes on several hosts never collide."""
    amounts: FourInts = NONE
    """What the request takes from each budget (1 request; its estimated tokens)."""
    rates: Four = NOTHING
    """Each budget's pace in units per second, 0.0 for a budget not paced."""
    ceilings: Four = NOTHING
    """Per-minute limits this process knows (told or announced), 0.0 where none: shared with the rest."""
    corrections: FourInts = NONE
    """What answers settled since the last ask: tokens used beyond the estimate (+) or short of it, or requests
    never sent (-)."""
    hold_s: float = 0.0
    """A 429's wait: hold every process this long from now."""
    max_wait_s: float = 0.0
    """Take a slot only if it comes within this long (the horizon, or the request's deadline)."""
    blind: bool = False
    """This process knows no limit at all: go by the opening allowance until someone learns one."""
    tolerance_s: float = 0.0
    """How far ahead of its own schedule the request budget may let a request go. With tokens paced too, a short
    request would otherwise hold the token budget idle for the rest of its request's turn; the caller keeps this
    within the headroom its request rate leaves under the limit, so that no second holds more than the limit."""


@dataclass(slots=True)
class Grant:
    admitted: bool
    wait_s: float
    """Admitted: how long from now until the request may go. Not admitted: until its slot would come (or,
    when blind, until asking again is worth it)."""
    ceilings: Four = NOTHING
    """The per-minute limits the group knows (0.0 where none)."""
    members: int = 1
    cooling_s: float = 0.0
    granted: int = 0
    """Requests granted so far to every member: a process's share is what it was granted of it."""
    paces: Four = NOTHING
    """Each budget's pace in units per second, as last asked for."""


class SharedStore(Protocol):
    """Where the shared state lives: Redis (`shared_redis.RedisStore`) or a Ray actor (`llmgather.ray`)."""

    where: str
    """What to call it in a message, with no password in it."""

    async def admit(self, quota: QuotaId, ask: Ask) -> Grant:
        """Apply `ask` to `quota`, atomically. Raises `Unreachable` when the store cannot be reached."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Quota:
    """One quota's state (a hash in Redis)."""

    tat: list[float] = field(default_factory=lambda: [0.0] * KINDS)
    ceilings: list[float] = field(default_factory=lambda: [0.0] * KINDS)
    paces: list[float] = field(default_factory=lambda: [0.0] * KINDS)
    cool_until: float = 0.0
    blind_left: int = INITIAL_WINDOW
    blind_from: float = 0.0
    """When the first request went with no limit known."""
    blind_used: list[float] = field(default_factory=lambda: [0.0] * KINDS)
    """What the requests sent with no limit known took of each budget: the schedule counts them once it starts."""
    granted: int = 0
    members: dict[str, float] = field(default_factory=dict)
    last_seen: float = 0.0


class SharedState:
    """Every quota of one store, in memory: the algorithm of `admit.lua`, step for step."""

    def __init__(self) -> None:
        self.quotas: dict[str, Quota] = {}

    def admit(self, key: str, ask: Ask, now: float) -> Grant:
        """`ask` applied to the quota named `key` at `now` (seconds, on the store's one clock)."""
        quota = self.quotas.get(key)
        if quota is None or now - quota.last_seen > STATE_TTL_S:
            quota = self.quotas[key] = Quota()
        quota.last_seen = now
        quota.members[ask.member] = now
        for member, seen in list(quota.members.items()):
            if seen <= now - MEMBER_TTL_S:
                del quota.members[member]
        for k in range(KINDS):
            if ask.ceilings[k] > 0:
                quota.ceilings[k] = ask.ceilings[k]
            rate = ask.rates[k]
            if rate > 0 and ask.corrections[k] != 0:
                quota.tat[k] = max(now, quota.tat[k] + ask.corrections[k] / rate)
        if ask.hold_s > 0:
            quota.cool_until = max(quota.cool_until, now + ask.hold_s)
            for k in range(KINDS):  # grants wait for it anyway; booked, it shows in `shared status`
                quota.tat[k] = max(quota.tat[k], quota.cool_until)
        admitted, at = self._schedule(quota, ask, now)
        if admitted:
            quota.granted += 1
        return Grant(
            admitted=admitted,
            wait_s=max(0.0, at - now),
            ceilings=_four(quota.ceilings),
            members=len(quota.members),
            cooling_s=max(0.0, quota.cool_until - now),
            granted=quota.granted,
            paces=_four(quota.paces),
        )

    @staticmethod
    def _schedule(quota: Quota, ask: Ask, now: float) -> tuple[bool, float]:
        """Whether the request got a slot, and when that slot is (or would be)."""
        at = max(now, quota.cool_until)
        if ask.blind:
            if any(c > 0 for c in quota.ceilings):
                return False, now  # someone knows the limits: learn them and ask again at once
            if quota.blind_left <= 0 and now - quota.blind_from < 1.0:
                return False, now + BLIND_POLL_S
            if quota.blind_left <= 0 or quota.blind_from == 0.0:  # a second after the last allowance, the next
                quota.blind_left, quota.blind_from = INITIAL_WINDOW, now
                quota.blind_used = [0.0] * KINDS
            quota.blind_left -= 1
            for k in range(KINDS):
                quota.blind_used[k] += ask.amounts[k]
            return True, at
        for k in range(KINDS):
            if ask.rates[k] > 0 and quota.blind_used[k] > 0:  # what went blind still counts at the provider
                quota.tat[k] = max(quota.tat[k], quota.blind_from + quota.blind_used[k] / ask.rates[k])
            if ask.rates[k] > 0 and ask.amounts[k] > 0:
                at = max(at, quota.tat[k] - (ask.tolerance_s if k == 0 else 0.0))
        if at - now > ask.max_wait_s:
            return False, at
        for k in range(KINDS):
            rate = ask.rates[k]
            if rate > 0:
                quota.paces[k] = rate
                if ask.amounts[k] > 0:
                    quota.tat[k] = max(quota.tat[k], at) + ask.amounts[k] / rate
        return True, at


def _four(values: list[float]) -> Four:
    return (values[0], values[1], values[2], values[3])


@dataclass(frozen=True, slots=True)
class SharedStats:
    """What the live view and the summary say of a shared pace."""

    where: str
    together: bool
    """Paced with the others now; False while the store is unreachable and this process paces alone."""
    members: int
    share: float
    """This process's part of what the group was granted lately (its pace alone while the store is away)."""
    rpm: float | None
    """The group's request pace, per minute, as last asked for."""
    tpm: float | None
    outages: int = 0
