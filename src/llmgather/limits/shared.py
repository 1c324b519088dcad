"""One provider quota paced together by many processes and hosts, through a shared store (Redis, or a Ray actor).

A `SharedLimiter` is a `Limiter` whose admissions are granted by the store (`shared_state`: a slot in one
schedule for the whole group, one round trip each) rather than by its own budgets. What it learns it still learns
itself, from its own answers, and tells the others through its asks: the limits headers announce (and those it
was told), the cool-down after a 429, and how its estimates settled. What the others learned comes back in every
grant: a process that joins late, or knows no limit, paces at what the group knows from its first request.

Losing the store never loses work: the limiter goes on alone, as a plain `Limiter`, at its last known share of
the group's pace, says so once (through the `SharedLink` every limiter of the run shares), and paces together
again once the store answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import socket
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from llmgather.limits.headers import Kind
from llmgather.limits.pace import ARRIVAL_SLACK_S, HEADROOM, Cost
from llmgather.limits.queue import DeadlinePassed, Limiter, LimiterStats, Ticket
from llmgather.limits.shared_state import Ask, Grant, Misconfigured, QuotaId, SharedStats, SharedStore, Unreachable

HORIZON_S = 2.0
"""How far ahead a request may be granted its slot. Beyond it, it asks again when its turn is near: a slot
booked long before may no longer fit a pace that a 429 has since slowed."""
PROBE_S = 0.25
"""How often a store that stopped answering is asked again: on the wall clock's quarter seconds, so that the
processes of a host find it back together, not one by one (each would have the whole pace to itself meanwhile)."""
SHARE_WINDOW_S = 10.0
"""A process's share of the pace is what it was granted of the group's grants over this long."""


class SharedLink:
    """The run's one connection to a store: whether it answers, and the one message when that changes."""

    def __init__(
        self,
        store: SharedStore,
        *,
        on_warning: Callable[[str], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.member = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.together = True
        self.outages = 0
        self._found = False
        """Answering a probe again, but no ask granted since: lost again now, it is the same outage (a store
        that answers a probe and refuses every ask would otherwise be lost and found four times a second)."""
        self._warn = on_warning or (lambda message: warnings.warn(message, RuntimeWarning, stacklevel=2))
        self._sleep = sleep
        self._probe: asyncio.Task[None] | None = None
        self._telling: set[asyncio.Task[None]] = set()
        self.back = asyncio.Event()
        """Set while the store answers (`together`): what waits alone goes back to the shared schedule."""
        self.back.set()

    @property
    def answering(self) -> bool:
        """Together, and the store has granted an ask since it was found again (what the live view says)."""
        return self.together and not self._found

    async def start(self, *, optional: bool) -> None:
        """Check that the store answers. If not: `Unreachable`, or, when `optional`, pace alone until it does
        (but never past a store that refuses this process as it asks: `Misconfigured` is raised all the same)."""
        try:
            await self.store.ping()
        except Misconfigured:
            raise
        except Unreachable as exc:
            if not optional:
                raise
            self.lost(exc)

    async def admit(self, quota: QuotaId, ask: Ask) -> Grant:
        try:
            grant = await self.store.admit(quota, ask)
        except Unreachable as exc:
            self.lost(exc)
            raise
        if self._found:
            self._found = False
            self._warn(f"the shared pace at {self.store.where} answers again: pacing together")
        return grant

    def tell(self, quota: QuotaId, ask: Ask) -> None:
        """Send `ask` without waiting for its grant (news for the others: a 429's wait)."""
        if self.together:
            task = asyncio.get_running_loop().create_task(self._quietly(self.admit(quota, ask)))
            self._telling.add(task)  # the loop holds tasks weakly
            task.add_done_callback(self._telling.discard)

    def lost(self, exc: Exception) -> None:
        if not self.together:
            return
        self.together = False
        self.back.clear()
        if not self._found:
            self.outages += 1
            self._warn(
                f"the shared pace at {self.store.where} stopped answering ({exc}): each process paces alone at its"
                " last share of the limit until it answers again"
            )
        self._probe = asyncio.get_running_loop().create_task(self._wait_for_store())

    async def _wait_for_store(self) -> None:
        while not self.together:
            await self._sleep(PROBE_S - time.time() % PROBE_S)
            with contextlib.suppress(Unreachable):
                await self.store.ping()
                self.together = True
                self._found = True  # said when an ask is granted: see `admit`
                self.back.set()

    async def aclose(self) -> None:
        probe, self._probe = self._probe, None
        for task in [*self._telling, *([probe] if probe is not None else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Unreachable):
            await self.store.aclose()

    @staticmethod
    async def _quietly(asking: Awaitable[Grant]) -> None:
        with contextlib.suppress(Unreachable):
            await asking


class SharedLimiter(Limiter):
    def __init__(
        self,
        link: SharedLink,
        quota: QuotaId,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        input_tpm: float | None = None,
        output_tpm: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(rpm, tpm, input_tpm=input_tpm, output_tpm=output_tpm, clock=clock, sleep=sleep)
        self._learner.paced_with_others = True
        self._link = link
        self._quota = quota
        self._corrections = [0, 0, 0, 0]
        self._hold_s = 0.0
        self._heard_ceilings = (0.0, 0.0, 0.0, 0.0)
        self._grant = Grant(admitted=False, wait_s=0.0)
        self._granted_here = 0
        self._samples: deque[tuple[float, int, int]] = deque()
        """(when, granted here, granted to all) over the last `SHARE_WINDOW_S`: this process's share."""
        self._asking = 0
        self._budgets_paced = 0
        self._alone = False
        self._booked_until = -math.inf
        """When the last slot the store granted this process comes: pacing alone starts after it."""

    @property
    def awaiting_first_answer(self) -> bool:
        # Together, the store's opening allowance stands in for the wait for a first answer.
        return not self._link.together and super().awaiting_first_answer

    def admit_now(self, cost: Cost) -> Ticket | None:
        return None if self._link.together else super().admit_now(cost)

    async def admit(
        self, cost: Cost, reestimate: Callable[[], Cost] | None = None, deadline: float = math.inf
    ) -> Ticket:
        while True:
            while self._link.together:
                self._alone = False
                with contextlib.suppress(Unreachable):
                    return await self._granted(cost, reestimate, deadline)
            self._pace_alone()
            ticket = await self._admitted_alone(cost, reestimate, deadline)
            if ticket is not None:
                return ticket

    async def _admitted_alone(
        self, cost: Cost, reestimate: Callable[[], Cost] | None, deadline: float
    ) -> Ticket | None:
        """A ticket from this process's own budgets; None if the store answers again first: then those waiting
        here go back to the shared schedule, or they would go at their own pace on top of it."""
        alone = asyncio.ensure_future(super().admit(cost, reestimate, deadline))
        back = asyncio.ensure_future(self._link.back.wait())
        try:
            await asyncio.wait((alone, back), return_when=asyncio.FIRST_COMPLETED)
        finally:
            back.cancel()
            if not alone.done():
                alone.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await alone
        return alone.result() if not alone.cancelled() else None

    async def _granted(self, cost: Cost, reestimate: Callable[[], Cost] | None, deadline: float) -> Ticket:
        self._asking += 1
        try:
            while True:
                now = self._clock()
                if now >= deadline:
                    raise DeadlinePassed
                rates = self._rates()
                if not any(rates) and not self._learner.awaiting_first_answer:
                    return Ticket(cost)  # answers came and taught no limit, nor did 429s: nothing to pace
                ask = self._ask(cost, rates, min(HORIZON_S, deadline - now))
                try:
                    grant = await self._link.admit(self._quota, ask)
                except Unreachable:
                    self._keep_news(ask)
                    raise
                self._heard(grant)
                if grant.admitted:
                    slot = self._clock() + grant.wait_s
                    self._booked_until = max(self._booked_until, slot)
                    if grant.wait_s > 0:
                        await self._sleep(grant.wait_s)
                    if any(rates) and self._learner.resume_at > slot:
                        # Booked before a 429's wait began, it would meet the same refusal: its slot goes back, and
                        # it asks again once the wait is over (telling the others of it again, should they not know).
                        self._give_back(ask.amounts)
                        self._hold_s = max(self._hold_s, self._learner.resume_at - self._clock())
                        await self._sleep(self._learner.resume_at - self._clock())
                        continue
                    if any(rates) and self._clock() - slot > ARRIVAL_SLACK_S:
                        # Woken too late (a busy machine), it would crowd the slots after it. Its slot is not given
                        # back: the slots after it may be late too, and one given back would crowd them the same.
                        continue
                    self._learner.note_sent(cost)
                    # A blind grant booked nothing in the schedule: there is nothing to correct.
                    return Ticket(cost, shared=any(rates))
                if self._clock() + grant.wait_s >= deadline:
                    raise DeadlinePassed
                if any(rates):  # its slot is beyond the horizon: ask again as it nears
                    await self._sleep(max(0.0, grant.wait_s - HORIZON_S / 2))
                elif grant.wait_s > 0:  # no limit known anywhere, and the opening allowance is spent
                    await self._sleep(grant.wait_s)
                if reestimate is not None:
                    cost = reestimate()
        finally:
            self._asking -= 1

    def _give_back(self, amounts: tuple[int, int, int, int]) -> None:
        for kind, amount in enumerate(amounts):
            self._corrections[kind] -= amount

    def _keep_news(self, ask: Ask) -> None:
        """An ask the store never answered: what it carried goes with the next one."""
        for kind, correction in enumerate(ask.corrections):
            self._corrections[kind] += correction
        self._hold_s = max(self._hold_s, ask.hold_s)

    def _ask(self, cost: Cost, rates: tuple[float, float, float, float], max_wait_s: float) -> Ask:
        corrections, self._corrections = self._corrections, [0, 0, 0, 0]
        hold_s, self._hold_s = self._hold_s, 0.0
        ceilings = tuple(rate.ceiling or 0.0 for rate in self._learner.rates)
        return Ask(
            self._link.member,
            amounts=(1, cost.of(Kind.TOKENS), cost.of(Kind.INPUT), cost.of(Kind.OUTPUT)),
            rates=rates,
            ceilings=(ceilings[0], ceilings[1], ceilings[2], ceilings[3]),
            corrections=(corrections[0], corrections[1], corrections[2], corrections[3]),
            hold_s=hold_s,
            max_wait_s=max_wait_s,
            blind=not any(rates),
            tolerance_s=ARRIVAL_SLACK_S if self._budgets_paced > 1 else 0.0,
        )

    def _rates(self) -> tuple[float, float, float, float]:
        """Each budget's pace now, per second, under the limit by the arrival slack; 0.0 where none is known.
        With tokens paced too, requests go under it by that again: the request budget's tolerance (see `Ask`)."""
        paces = [(rate.rate or 0.0) * HEADROOM / 60.0 for rate in self._learner.rates]
        self._budgets_paced = sum(1 for pace in paces if pace > 0)
        under = HEADROOM if self._budgets_paced > 1 else 1.0
        return (paces[0] * under, paces[1] * under, paces[2] * under, paces[3] * under)

    def _heard(self, grant: Grant) -> None:
        """Learn what the group knows, and count this process's share of what it was granted."""
        self._grant = grant
        if grant.ceilings != self._heard_ceilings:
            self._heard_ceilings = grant.ceilings
            for kind, ceiling in zip(Kind, grant.ceilings, strict=True):
                if ceiling > 0 and self._learner.rates[kind].ceiling != ceiling:
                    self._learner.heard_elsewhere(kind, ceiling)
            self._apply_rates()
        if grant.admitted:
            self._granted_here += 1
            now, samples = self._clock(), self._samples
            samples.append((now, self._granted_here, grant.granted))
            while samples[0][0] < now - SHARE_WINDOW_S:
                samples.popleft()

    def share(self) -> float:
        """This process's part of the group's grants lately (an equal part, before any were counted)."""
        samples = self._samples
        if len(samples) >= 2 and samples[-1][2] > samples[0][2]:
            return min(1.0, (samples[-1][1] - samples[0][1]) / (samples[-1][2] - samples[0][2]))
        return 1.0 / max(1, self._grant.members)

    def _share_alone(self) -> float:
        """What to pace at alone: its share, but no more than an equal part, since each process counts its share
        over its own stretch of time, and shares a little over a quarter each would add up to more than the whole."""
        return min(self.share(), 1.0 / max(1, self._grant.members))

    def _pace_alone(self) -> None:
        if not self._alone:
            self._alone = True
            self.set_share(self._share_alone())
            self.start_alone(self._booked_until)

    def settle(self, ticket: Ticket, counted: Cost | None, *, rate_limited: bool = False) -> None:
        """A shared ticket's estimate is corrected in the group's schedule at the next ask."""
        if not ticket.shared:
            super().settle(ticket, counted, rate_limited=rate_limited)
            return
        corrections, cost = self._corrections, ticket.cost
        if counted is None:
            if not rate_limited:
                corrections[Kind.REQUESTS] -= 1  # never sent: its slot goes back
            for kind in (Kind.TOKENS, Kind.INPUT, Kind.OUTPUT):
                corrections[kind] -= cost.of(kind)
            return
        for kind in (Kind.TOKENS, Kind.INPUT, Kind.OUTPUT):
            corrections[kind] += counted.of(kind) - cost.of(kind)

    def on_rate_limited(
        self, retry_after: float | None, headers: Mapping[str, str] | None = None, *, shared: bool = False
    ) -> None:
        super().on_rate_limited(retry_after, headers, shared=shared)
        self._share_hold()

    def cool_down(self, seconds: float) -> None:
        super().cool_down(seconds)
        self._share_hold()

    def _share_hold(self) -> None:
        """Tell the others at once of a wait a 429 asked for: every request the group sends meanwhile is refused."""
        hold_s = self._learner.resume_at - self._clock()
        if hold_s > 0 and self._link.together:
            # An ask that can never be granted (a negative reach) carries the news and takes no slot.
            self._link.tell(self._quota, Ask(self._link.member, hold_s=hold_s, max_wait_s=-1.0))

    def stats(self) -> LimiterStats:
        stats = super().stats()
        grant = self._grant
        rpm = grant.paces[Kind.REQUESTS] * 60.0 / HEADROOM or None
        tpm = grant.paces[Kind.TOKENS] * 60.0 / HEADROOM or None
        shared = SharedStats(
            where=self._link.store.where,
            together=self._link.answering,
            members=grant.members,
            share=self.share(),
            rpm=rpm,
            tpm=tpm,
            outages=self._link.outages,
        )
        cooling_s = max(stats.cooling_for_s, grant.cooling_s if self._link.together else 0.0)
        return replace(stats, waiting=stats.waiting + self._asking, cooling_for_s=cooling_s, shared=shared)
