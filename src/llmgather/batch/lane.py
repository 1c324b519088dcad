"""The batch lane: one model's requests through its provider's batch API, results out as each batch ends.

    lane = BatchLane(api, journal, online_engine, options=..., retry=..., cost=..., cache=..., budget=...)
    async for result in lane.results(requests): ...      # the same Results the online engine yields

What it promises:
- Nothing is paid twice. Every part is journaled before it is submitted and its batch id after; a restart
  reattaches to every batch the journal names (or finds one created just before a crash), and a request that
  a live batch holds is never submitted again.
- Nothing is lost. A batch's results are read again on a restart for every request they answer that the
  output does not hold yet (the provider keeps them for weeks), so a crash between reading and writing costs
  only a second read.
- Failures are the online ones. Each request's error is classified as online; transient ones and requests
  that expired or were cancelled with their batch go again in a later batch (within `max_retries`), permanent
  ones become error results, and a refused key or a spent quota stops the run.
- `--by`: whatever the batches have not answered by then (counted from the run's start, which the journal
  keeps across restarts) is cancelled at the provider, and goes online through `online` under the usual limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass

from llmgather.backends.redact import redact
from llmgather.batch.api import BatchApi, BatchState, BatchStatus, EndedAs
from llmgather.batch.counts import BatchCounts, BatchView
from llmgather.batch.journal import Journal, Part, custom_id
from llmgather.budget import Budget, to_units
from llmgather.config import BatchOptions
from llmgather.engine import (
    Engine,
    EngineStats,
    ResultCache,
    StopReason,
    each_request,
    stopped_by,
    stopped_error,
)
from llmgather.errors import FatalError, PermanentError, RequestError, RunStopped, TransientError
from llmgather.limits import Limits, TokenEstimator
from llmgather.limits.gate import CostFn
from llmgather.limits.tokens import tiktoken_counter
from llmgather.retry import RetryPolicy
from llmgather.stats import LatencyHistogram
from llmgather.types import ErrorInfo, Request, RequestId, Response, Result

FIRST_POLL_S, LONGEST_POLL_S, POLL_GROWTH = 2.0, 60.0, 1.5
"""A batch is asked how it is doing after 2 s, then each time 1.5 times later, at most a minute apart."""
CANCEL_TRIES = 10
"""After `--by`, a batch still running is asked to cancel again at each poll, this many times at most."""
SUBMIT_TRIES = 4
TOKEN_LIMIT_WAITS = 8
"""A lone request refused for OpenAI's enqueued-token limit, with nothing of the run live, waits and goes again
this many times (2 s, 4 s, ... then a minute apart: about 6 minutes) before it fails."""
"""A submission refused for a transient reason is tried this many times before the run stops."""


@dataclass(slots=True)
class _Item:
    request: Request
    attempts: int = 0
    part: int | None = None
    """The part that holds it now; None while it waits to be submitted."""
    held: int = 0
    """Budget units held for it while its batch runs."""
    first_sent: float | None = None


@dataclass(slots=True)
class _Live:
    part: Part
    next_poll: float
    interval: float = FIRST_POLL_S
    status: BatchStatus | None = None
    reread: bool = False
    """Ended before this run began (collected, perhaps not written): read its results again."""
    cancels: int = 0
    """Cancels asked again after `--by` (the first one aside)."""


class BatchLane:
    def __init__(
        self,
        api: BatchApi,
        journal: Journal,
        online: Engine,
        *,
        options: BatchOptions,
        retry: RetryPolicy,
        cost: CostFn | None,
        online_cost: CostFn | None = None,
        cache: ResultCache | None = None,
        budget: Budget | None = None,
        api_base: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api = api
        self.journal = journal
        self.online = online
        self.model = online.model
        self.limits: Limits = online.limits
        self.backend = online.backend
        self._options = options
        self._retry = retry
        self._cost = cost
        self._online_cost = online_cost
        self._cache = cache
        self._budget = budget
        self._api_base = api_base
        self._clock = clock
        self._sleep = sleep
        self._estimator = TokenEstimator(tiktoken_counter(self.model))
        self._items: dict[RequestId, _Item] = {}
        self._waiting: list[_Item] = []
        self._live: dict[int, _Live] = {}
        self._held_back = False
        """OpenAI's enqueued-token limit refused a part: submit no more until a batch ends."""
        self._wake = asyncio.Event()
        self.counts = BatchCounts()
        self._failures: list[Result] = []
        self._no_more = False
        """The budget is spent: submit nothing more, collect what is live."""
        self._token_waits = 0
        """Times a part of one request was refused for the enqueued-token limit with nothing of ours live."""
        self._resume_at = -math.inf
        """Submit nothing before then (waiting for the account's enqueued tokens to free up)."""
        self._cap: int | None = None
        """Requests per part, once OpenAI's enqueued-token limit refused a part with nothing else live."""
        self.fatal: FatalError | None = None
        self.stop_reason: StopReason | None = None
        self.detached = False
        self._started = clock()
        self._deadline = math.inf if options.by_s is None else self._started + options.by_s - self._ran_before()
        self._tally_failed = 0
        self._tally_succeeded = 0
        self._tally_cached = 0
        self._resent = 0
        self._spilling = False
        """`--by` has come: what the batches leave unanswered goes online."""
        self._latency = LatencyHistogram()
        """Of every result, batch and online: from submission to the answer read."""

    def _ran_before(self) -> float:
        """How long ago the run began: `--by` counts from then, so a restart (after a crash, or to collect a
        detached run) neither grants the batches a fresh deadline nor makes --by with --detach meaningless."""
        began = self.journal.started
        return 0.0 if began is None else max(0.0, time.time() - began)

    # -- the way in ------------------------------------------------------------------------------

    async def results(self, requests: Iterable[Request] | AsyncIterable[Request]) -> AsyncGenerator[Result, None]:
        """Yield one Result per request as its batch ends (or as it is answered online after `--by`)."""
        owners = self._owners()
        async for request in each_request(requests):
            hit = await self._cache.lookup(self.model, self.api.endpoint, request) if self._cache is not None else None
            if hit is not None:
                self._tally_cached += 1
                self._tally_succeeded += 1
                yield hit
                continue
            item = self._items[request.id] = _Item(request)
            part = owners.get(request.id)
            if part is None or not self._hold(item, part):
                self._waiting.append(item)
        await self._settle_unneeded()
        await self._find_unjournaled()
        while ((self._waiting and not self._no_more) or self._live) and self.stop_reason is None:
            if self._clock() >= self._deadline:
                async for result in self._spill():
                    yield result
                break
            await self._submit_waiting()
            if self.detached:
                break
            async for result in self._poll_due():
                yield result
        for result in self._take_failures():  # refused before they went (a request a batch cannot carry)
            yield result
        if self.detached:
            return
        if self._no_more and self._waiting and self.stop_reason is None:
            self.stop_reason = StopReason.BUDGET
        if self.stop_reason is not None:
            raise self._stopped_error()

    def stop(self, reason: StopReason = StopReason.SIGNAL) -> None:
        """Submit and collect nothing more; the batches go on at the provider (they are paid for)."""
        if self.stop_reason is None:
            self.stop_reason = StopReason(reason)
        self.online.stop(reason)
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    async def aclose(self) -> None:
        await asyncio.gather(self.api.aclose(), self.online.backend.aclose(), return_exceptions=True)

    # -- reattaching -----------------------------------------------------------------------------

    def _owners(self) -> dict[RequestId, Part]:
        """Which part holds each request: the latest to name it."""
        owners: dict[RequestId, Part] = {}
        for part in sorted(self.journal.parts.values(), key=lambda p: p.number):
            if part.model == self.model:
                owners.update(dict.fromkeys(part.ids, part))
        return owners

    def _hold(self, item: _Item, part: Part) -> bool:
        """Give `item` to the part that holds it, if that part can still answer it."""
        if part.refused:
            return False  # never created, or failed whole: it answered none of them
        item.part = part.number
        item.attempts = 1
        item.first_sent = part.submitted_at
        if part.number not in self._live:
            self._live[part.number] = _Live(part, self._clock(), reread=part.ended)
        return True

    async def _settle_unneeded(self) -> None:
        """A live part that holds none of this run's requests (every one answered: a crash came after the last
        was written and before its "collected" line) is journaled as ended once the provider says so: else every
        resume would wait on it and a fresh run be refused for it, for ever. One still running is left to run
        (`llmgather batches OUT --cancel` stops it), one never made is refused, and any doubt waits for the
        next resume."""
        for part in self.journal.live_parts(self.model):
            if part.number in self._live:
                continue
            try:
                if part.batch_id is None:
                    found = await self._created(part)
                    if found is None:
                        self.journal.refused(part)
                        continue
                    self.journal.submitted(part, found)
                assert part.batch_id is not None
                if (await self.api.status(part.batch_id)).state is BatchState.ENDED:
                    self.journal.collected(part)
            except RequestError:
                continue

    async def _find_unjournaled(self) -> None:
        """A part with an intent and no batch id was perhaps created just before a crash: ask the provider."""
        for live in list(self._live.values()):
            part = live.part
            if part.batch_id is not None:
                continue
            try:
                found = await self._created_patiently(part)
            except FatalError as error:
                self._halt(error)  # asked about nothing more: the resume asks again
                return
            if found is not None:
                self.journal.submitted(part, found)
                continue
            self.journal.refused(part)  # never created (or not told apart): its requests go again
            del self._live[part.number]
            for request_id in part.ids:
                item = self._items.get(request_id)
                if item is not None and item.part == part.number:
                    item.part, item.attempts = None, 0
                    self._waiting.append(item)

    async def _created_patiently(self, part: Part) -> str | None:
        """`_created`, asked again after a transient failure. A provider that cannot be asked stops the run
        (resumably): the part sent again unasked might be a second batch, paid twice."""
        for attempt in range(1, SUBMIT_TRIES):
            try:
                return await self._created(part)
            except TransientError as error:
                await self._sleep(max(error.retry_after or 0.0, 2.0**attempt))
        try:
            return await self._created(part)
        except TransientError as error:
            why = f"could not ask for the batch of part {part.number}: {error.message}"
            raise FatalError(why, status=error.status) from error

    async def _created(self, part: Part) -> str | None:
        """The id of the batch made for `part` though its id never reached the journal, if the provider has one."""
        try:
            found = await self.api.find(self._tags(part), since=part.intent_at - 60)
        except (TransientError, FatalError):
            raise
        except RequestError:
            return None  # an endpoint that lists no batches: there is nowhere to look
        known = {p.batch_id for p in self.journal.parts.values()}
        candidates = [s for s in found if s.id not in known and (s.tags or s.total == len(part.ids))]
        return candidates[0].id if len(candidates) == 1 else None

    def _tags(self, part: Part) -> dict[str, str]:
        return {"llmgather_run": self.journal.run, "llmgather_part": str(part.number)}

    # -- submitting ------------------------------------------------------------------------------

    async def _submit_waiting(self) -> None:
        if self._clock() < self._resume_at:
            return
        while self._waiting and not (self._held_back or self._no_more) and self.stop_reason is None:
            async with self.journal.submitting if not self.api.keeps_tags else contextlib.nullcontext():
                chosen, lines = self._next_part()
                if not chosen:
                    return
                part = self.journal.intend(self.model, [item.request.id for item in chosen], self._api_base)
                for item in chosen:
                    item.part, item.attempts = part.number, item.attempts + 1
                    item.first_sent = item.first_sent or time.time()
                batch_id = await self._create(part, lines)
                if batch_id is None:
                    return
                self.journal.submitted(part, batch_id)
            self.counts.submitted += 1
            self._live[part.number] = _Live(part, self._clock() + FIRST_POLL_S)
            view = BatchView(part.number, batch_id, "validating", len(chosen), 0, 0, time.time())
            self.counts.views[part.number] = view
        if self._options.detach and (
            not self._waiting or self._held_back or self._no_more or self._clock() < self._resume_at
        ):
            self.detached = True  # whatever waits (on the token limit, or the budget) goes at the resume

    def _next_part(self) -> tuple[list[_Item], list[bytes]]:
        """The next requests to submit together, and their lines: within the provider's caps, `--batch-size` and
        the budget. A request the provider's batch cannot carry faithfully fails here, as it would online."""
        most = min(self.api.max_requests, self._options.size or self.api.max_requests, self._cap or math.inf)
        number = self.journal.next_part
        chosen: list[_Item] = []
        lines: list[bytes] = []
        size = 0
        while self._waiting and len(chosen) < most:
            item = self._waiting[0]
            try:
                line = self.api.encode(custom_id(self.journal.run, number, len(chosen)), item.request)
            except RequestError as error:
                self._waiting.pop(0)
                self._failures.append(self._failure(item, error, None))
                continue
            if chosen and size + len(line) + 1 > self.api.max_bytes:
                break
            if not self._take_budget(item, holding=bool(chosen)):
                break
            chosen.append(self._waiting.pop(0))
            lines.append(line)
            size += len(line) + 1
        return chosen, lines

    def _take_budget(self, item: _Item, *, holding: bool) -> bool:
        """Hold the budget for `item` while its batch runs. `holding`: the part being built holds some already."""
        budget = self._budget
        if budget is None:
            return True
        estimate = self._cost(self._estimator.expected_usage(item.request)) if self._cost is not None else None
        taken = budget.try_take(estimate or 0.0)
        if taken:
            item.held = to_units(estimate or 0.0)
            return True
        # None: it fits once what is held settles, which the live batches and the part being built will do.
        if taken is False or not (self._live or holding):
            self._no_more = True
        return False

    async def _create(self, part: Part, lines: list[bytes]) -> str | None:
        """Submit a part; None if it was refused (its requests then wait, fail, or the run stops)."""
        for attempt in range(1, SUBMIT_TRIES + 1):
            try:
                # A failed try may have made the batch all the same (its answer lost on the way back, a
                # gateway's 502): sent again, it would be a second batch, paid twice. Only one not found goes.
                found = await self._created(part) if attempt > 1 else None
                if found is not None:
                    return found
                return await self.api.submit(lines, self._tags(part))
            except FatalError as error:
                self._halt(error)
            except TransientError as error:
                if attempt < SUBMIT_TRIES:
                    await self._sleep(max(error.retry_after or 0.0, 2.0**attempt))
                    continue
                self._halt(FatalError(f"the batch could not be submitted: {error.message}", status=error.status))
            except RequestError as error:
                self.journal.refused(part)
                self._fail_part(part, error)
                return None
            break
        # Stopped with the part's intent journaled and no batch id: the last try may have made the batch all
        # the same, so the part is not marked refused; the resume asks the provider before sending it again.
        self._unhold(part)
        return None

    def _fail_part(self, part: Part, error: RequestError) -> None:
        for _, item in self._held_by(part):
            self._release(item)
            self._failures.append(self._failure(item, error, None))

    def _unhold(self, part: Part) -> list[_Item]:
        """The part went nowhere: its requests are back to wait, uncounted (returned, in the part's order)."""
        held = [item for _, item in self._held_by(part)]
        for item in held:
            self._release(item)
            item.part, item.attempts = None, max(0, item.attempts - 1)
        return held

    def _held_by(self, part: Part) -> list[tuple[int, _Item]]:
        """The requests `part` holds, with their index in it. After a restart that is not all of its ids: one
        the output or the cache has answered meanwhile is not this run's to settle."""
        held = []
        for index, request_id in enumerate(part.ids):
            item = self._items.get(request_id)
            if item is not None and item.part == part.number:
                held.append((index, item))
        return held

    # -- polling ---------------------------------------------------------------------------------

    async def _poll_due(self) -> AsyncGenerator[Result, None]:
        for result in self._take_failures():
            yield result
        if not self._live and self._clock() >= self._resume_at:
            return
        due = min((live.next_poll for live in self._live.values()), default=self._resume_at)
        wait = min(due, self._deadline) - self._clock()
        if wait > 0:
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if self.stop_reason is not None or self._clock() >= self._deadline:
                return
        now = self._clock()
        for live in [live for live in self._live.values() if live.next_poll <= now]:
            status = await self._status(live)
            if status is None:
                continue
            if status.state is BatchState.ENDED:
                async for result in self._collect(live, status):
                    yield result
                if self.stop_reason is not None:
                    return

    async def _status(self, live: _Live) -> BatchStatus | None:
        assert live.part.batch_id is not None
        try:
            status = await self.api.status(live.part.batch_id)
        except FatalError as error:
            self._halt(error)
            return None
        except TransientError:
            live.next_poll = self._clock() + live.interval  # the next poll asks again
            return None
        except RequestError as error:
            # The provider does not know it (another key, organization or --api-base than the run's): polled
            # on, it would never end; sent again, it might be paid twice where it was made. Stop, resumably.
            why = f"the batch {live.part.batch_id} of part {live.part.number} cannot be read: {error.message}"
            self._halt(FatalError(why, status=error.status))
            return None
        live.status = status
        live.interval = min(live.interval * POLL_GROWTH, LONGEST_POLL_S)
        view = self._view(live.part, status)
        # A batch that reports its progress is asked again when it should end, if that comes before the backoff.
        expected = view.eta_s(time.time())
        live.next_poll = self._clock() + min(live.interval, max(1.0, expected if expected is not None else math.inf))
        return status

    def _view(self, part: Part, status: BatchStatus) -> BatchView:
        before = self.counts.views.get(part.number)
        ended_at = None
        if status.state is BatchState.ENDED:
            ended_at = before.ended_at if before is not None and before.ended_at is not None else time.time()
        view = BatchView(
            part.number,
            status.id,
            status.state.value,
            status.total,
            status.done,
            status.failed,
            part.submitted_at or time.time(),
            ended_at,
        )
        self.counts.views[part.number] = view
        return view

    # -- collecting ------------------------------------------------------------------------------

    async def _collect(self, live: _Live, status: BatchStatus) -> AsyncGenerator[Result, None]:
        part = live.part
        del self._live[part.number]
        self._held_back = False  # a batch ended: its enqueued tokens are free again
        if status.ended_as is EndedAs.FAILED:
            for result in self._failed_whole(part, status):
                yield result
            return
        assert part.batch_id is not None
        seen: set[int] = set()
        try:
            async for answer in self.api.results(part.batch_id):
                index = part.index_of(answer.custom_id)
                if index is None or index in seen:
                    continue
                seen.add(index)
                item = self._items.get(part.ids[index])
                if item is None or item.part != part.number:
                    continue  # answered already, or held by a later part
                outcome = self._outcome(item, part, answer.response, answer.error, read_before=live.reread)
                if outcome is not None:
                    yield outcome
        except FatalError as error:
            self._halt(error)
            return
        except RequestError as error:
            if isinstance(error, TransientError) and not live.reread:
                self._live[part.number] = live  # read it again at the next poll
                live.next_poll = self._clock() + live.interval
                return
            if not live.reread:  # refused for good: read again, it never ends; sent again, it is paid twice
                why = f"the results of the batch {part.batch_id} of part {part.number} cannot be read: {error.message}"
                self._halt(FatalError(why, status=error.status))
                self._live[part.number] = live  # still this part's: a resume reads them again
                return
            seen = set()  # results gone at the provider: what the output lacks goes again
        for index, request_id in enumerate(part.ids):
            item = self._items.get(request_id)
            if index not in seen and item is not None and item.part == part.number:
                self._again(item, None)
        if not part.ended:
            self.journal.collected(part)
        for result in self._take_failures():
            yield result

    def _outcome(
        self, item: _Item, part: Part, response: Response | None, error: RequestError | None, *, read_before: bool
    ) -> Result | None:
        if response is not None:
            return self._success(item, part, response)
        if isinstance(error, FatalError):
            self._halt(error)
            item.part = None  # not written: a resume sends it again
            return None
        if read_before and error is not None:
            # A failure an earlier run already read: the output lacks it only if --retry-failed asks for it
            # again (or a crash lost the line). Written again as it was, it would never be sent again.
            return self._again(item, error)
        if isinstance(error, PermanentError) or (error is not None and not isinstance(error, TransientError)):
            return self._failure(item, error, part.batch_id)
        return self._again(item, error)

    def _again(self, item: _Item, error: RequestError | None) -> Result | None:
        """Send it in a later batch, or fail it if it has had its tries. Past `--by`, one its batch left
        unanswered (cancelled at the deadline) has not failed: it goes online, under the online lane's tries."""
        self._release(item)
        if error is None and self._spilling:
            item.part = None
            self._waiting.append(item)
            return None
        if item.attempts > self._retry.max_retries:
            why = error or TransientError(f"not answered by {item.attempts} batches (expired or cancelled)")
            self._failures.append(self._failure(item, why, None))
            return None
        item.part = None
        self._resent += 1
        self._waiting.append(item)
        return None

    def _failed_whole(self, part: Part, status: BatchStatus) -> list[Result]:
        """A batch refused whole: over the enqueued-token limit (its part waits for a batch to end), or
        invalid (the lines named fail, saying why and where in the input; the rest go again)."""
        self.journal.refused(part)
        if status.over_token_limit:
            held = self._held_by(part)
            if not self._live and len(part.ids) == 1 and held and self._token_waits >= TOKEN_LIMIT_WAITS:
                error = PermanentError(self._token_limit_text(status))  # refused alone, again and again
                return [self._failure(item, error, part.batch_id) for _, item in held]
            self._waiting[:0] = self._unhold(part)
            if self._live:
                self._held_back = True  # until a batch ends and frees its enqueued tokens
            elif len(part.ids) > 1:
                self._cap = max(1, len(part.ids) // 2)  # too large alone: smaller parts
            else:  # other work of the account holds the enqueued tokens: wait for it, ever longer
                self._token_waits += 1
                self._resume_at = self._clock() + min(FIRST_POLL_S * 2**self._token_waits, LONGEST_POLL_S)
            return []
        named = {p.line: p for p in status.problems if p.line is not None}
        results = []
        for index, item in self._held_by(part):
            problem = named.get(index + 1)
            if problem is None and named:
                self._release(item)
                item.part, item.attempts = None, item.attempts - 1
                self._waiting.append(item)
                continue
            problem = problem or (status.problems[0] if status.problems else None)
            why = f"{problem.code}: {problem.message}" if problem is not None else "no reason given"
            where = f" (input {item.request.source})" if item.request.source else ""
            error = PermanentError(redact(f"the batch {status.id} failed validation: {why}{where}"))
            results.append(self._failure(item, error, part.batch_id))
        return results

    @staticmethod
    def _token_limit_text(status: BatchStatus) -> str:
        problem = next(p for p in status.problems if p.code == "token_limit_exceeded")
        return redact(f"the batch {status.id} was refused: {problem.code}: {problem.message}")

    # -- the deadline ----------------------------------------------------------------------------

    async def _spill(self) -> AsyncGenerator[Result, None]:
        """`--by` has come: cancel what is live, keep what it answered, and send the rest online."""
        self._spilling = True
        for live in list(self._live.values()):
            if live.part.batch_id is not None and not live.reread:
                try:
                    await self.api.cancel(live.part.batch_id)
                except FatalError as error:
                    self._halt(error)
                except RequestError:
                    pass  # it may have ended meanwhile: its status says
                live.next_poll, live.interval = self._clock(), 1.0
        while self._live and self.stop_reason is None:
            self._deadline = math.inf
            async for result in self._poll_due():
                yield result
            await self._cancel_again()
        rest = [item.request for item in self._waiting]
        self._waiting.clear()
        if self.stop_reason is not None or not rest:
            return
        async for result in self.online.results(rest):
            result.lane = "online"
            self._latency.add(result.latency_s)
            self.counts.online += 1
            yield result

    async def _cancel_again(self) -> None:
        """A cancel that failed (the provider busy) is asked again: else `--by` waits for the batch to end by
        itself, up to a day."""
        for live in self._live.values():
            status, batch_id = live.status, live.part.batch_id
            running = status is not None and status.state in (BatchState.VALIDATING, BatchState.IN_PROGRESS)
            if batch_id is None or live.reread or not running or live.cancels >= CANCEL_TRIES:
                continue
            live.cancels += 1
            with contextlib.suppress(RequestError):
                await self.api.cancel(batch_id)

    # -- outcomes --------------------------------------------------------------------------------

    def _take_failures(self) -> list[Result]:
        failures, self._failures = self._failures, []
        return failures

    def _success(self, item: _Item, part: Part, response: Response) -> Result:
        self._release(item)
        item.part = -1
        usage = response.usage
        cost = self._cost(usage) if usage is not None and self._cost is not None else None
        if cost is not None:
            self.counts.batch_cost_usd += cost
            if self._budget is not None:
                self._budget.charge(cost)
        if usage is not None and self._online_cost is not None:
            self.counts.batch_online_price_usd += self._online_cost(usage) or 0.0
        if usage is not None:
            self._estimator.observe(item.request, usage)
            self.counts.prompt_tokens += usage.prompt_tokens
            self.counts.completion_tokens += usage.completion_tokens
        self.counts.batched += 1
        self._tally_succeeded += 1
        request = item.request
        latency_s = time.time() - (item.first_sent or time.time())
        self._latency.add(latency_s)
        result = Result(
            id=request.id,
            model=self.model,
            content=response.content,
            usage=usage,
            latency_s=latency_s,
            attempts=item.attempts,
            cost_usd=cost,
            finish_reason=response.finish_reason,
            row=request.row,
            finished_at=time.time(),
            digest=request.digest(),
            lane="batch",
            batch_id=part.batch_id,
        )
        if self._cache is not None:
            self._cache.put(self.model, self.api.endpoint, request, result)
        return result

    def _failure(self, item: _Item, error: RequestError, batch_id: str | None) -> Result:
        self._release(item)
        item.part = -1
        self.counts.batched += 1
        self._tally_failed += 1
        request = item.request
        return Result(
            id=request.id,
            model=self.model,
            latency_s=time.time() - (item.first_sent or time.time()),
            attempts=item.attempts,
            error=ErrorInfo(type=error.type_name, status=error.status, message=error.message),
            exception=error,
            row=request.row,
            finished_at=time.time(),
            digest=request.digest(),
            lane="batch",
            batch_id=batch_id,
        )

    def _release(self, item: _Item) -> None:
        if self._budget is not None and item.held:
            self._budget.release(item.held)
        item.held = 0

    def _halt(self, error: FatalError) -> None:
        if self.fatal is None:
            self.fatal = error
        self.stop(StopReason.FATAL)

    def _stopped_error(self) -> RunStopped:
        return stopped_error(f"{self.model} at {self.api.endpoint}", self.stop_reason, self.fatal, self._budget)

    # -- what the view shows ---------------------------------------------------------------------

    def stats(self) -> EngineStats:
        """The online engine's figures (what went online after `--by`) with the batches' added in."""
        online = self.online.stats()
        counts = self.counts
        waiting = len(self._waiting) + sum(len(live.part.ids) for live in self._live.values())
        return dataclasses.replace(
            online,
            endpoint=self.api.endpoint,
            elapsed_s=self._clock() - self._started,
            dispatched=online.dispatched + counts.batched + waiting,
            succeeded=online.succeeded + self._tally_succeeded,
            cached=online.cached + self._tally_cached,
            failed=online.failed + self._tally_failed,
            in_flight=online.in_flight + waiting,
            prompt_tokens=online.prompt_tokens + counts.prompt_tokens,
            completion_tokens=online.completion_tokens + counts.completion_tokens,
            cost_usd=online.cost_usd + counts.batch_cost_usd,
            retries=online.retries + self._resent,
            latency_p50_s=self._latency.percentile(50),
            latency_p95_s=self._latency.percentile(95),
            latency_p99_s=self._latency.percentile(99),
            stopped_by=stopped_by(self.stop_reason, self.fatal) or online.stopped_by,
            batch=counts,
        )
