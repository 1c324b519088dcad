"""The response cache in Redis, for workers on several hosts: the keys and rules of `llmgather.cache`.

An answer is one Redis string under `llmgather:cache:` + `cache_key(...)`, a JSON list (model, created,
content, usage, finish_reason), with an optional expiry. Nothing else is kept, so `stats` and `clear`
walk the keys (SCAN): they are for a person at a terminal, not for a run.

The event loop never waits on Redis: one worker thread talks to it, and the loop only hands it work and
takes the answers back. Lookups made while one is out are sent together (one MGET); answers are written
in batches (one pipeline). Opening asks Redis once, and one that does not answer is the user's to fix
(`InputError`). Once a run is going nothing raises: a Redis that fails makes a lookup a miss and holds
answers back (at most `MAX_HELD`, the oldest dropped first), with one warning; it is asked again every
`PROBE_S`, and when it answers the cache works again and says so.

redis-py is imported here only, when a run asks for a Redis cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from llmgather.cache import CacheStats, answer_from, cache_key, is_deterministic
from llmgather.errors import InputError
from llmgather.limits.shared_redis import check_db, redacted
from llmgather.types import Request, Result

if TYPE_CHECKING:
    from redis import Redis

PREFIX = "llmgather:cache:"
TIMEOUT_S = 1.0
"""A Redis this slow is as good as gone for a run: it goes on without the cache until Redis answers."""
PROBE_S = 1.0
"""While Redis is gone, how often it is asked again: by writing what is held back, or else a PING."""
MAX_HELD = 10_000
"""Answers held back while Redis is gone; past it the oldest are dropped (and counted)."""
MAX_LOOKUPS = 500  # keys per MGET
_SCAN_COUNT = 1000

T = TypeVar("T")
_Value = str


class RedisCache:
    """Answers kept in Redis. Implements the engine's `ResultCache`, as `ResponseCache` does.

    Counters for the summary: `hits`, `misses`, `stored`, `skipped` (not cacheable under
    `deterministic_only`), `unstored` (answers dropped while Redis was gone) and `disabled` (None, or what
    the outages cost: the summary's "switched off during the run" line).
    """

    def __init__(
        self,
        url: str,
        *,
        deterministic_only: bool = False,
        on_warning: Callable[[str], None] | None = None,
        ttl_s: float | None = None,
        flush_every: int = 100,
        flush_interval_s: float = 0.5,
        close_timeout_s: float = 3.0,
    ) -> None:
        if ttl_s is not None and ttl_s <= 0:
            raise InputError(f"a cache expiry must be above 0 s, not {ttl_s:g}", source=redacted(url))
        self.where = redacted(url)
        self.deterministic_only = deterministic_only
        self.ttl_s = ttl_s
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self.skipped = 0
        self.unstored = 0
        self._on_warning = on_warning
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._close_timeout_s = close_timeout_s
        self._pending: dict[str, _Value] = {}
        """Answers not yet handed to the worker."""
        self._writing: dict[str, _Value] = {}
        """Answers the worker is writing: still served from here, and written again at close if it never said."""
        self._asks: list[tuple[str, asyncio.Future[_Value | None]]] = []
        self._last_flush = time.monotonic()
        self._down_since: float | None = None
        self._down_s = 0.0
        self._outages = 0
        self._probing = False
        self._next_probe = 0.0
        self._redis: Redis | None = _connect(url, self.where)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmgather-cache")

    # -- the run's side: never raises, never blocks the loop ---------------------------------------

    async def lookup(self, model: str, endpoint: str, request: Request) -> Result | None:
        if self.deterministic_only and not is_deterministic(request):
            self.skipped += 1
            return None
        key = PREFIX + cache_key(model, endpoint, request)
        value = self._pending.get(key) or self._writing.get(key)
        if value is None and self._redis is not None and self._up():
            value = await self._fetch(key)
        hit = _decoded(request, model, value) if value is not None else None
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    def put(self, model: str, endpoint: str, request: Request, result: Result) -> None:
        if self._redis is None or not result.ok:
            return
        if self.deterministic_only and not is_deterministic(request):
            return
        usage = result.usage.to_dict() if result.usage is not None else None
        key = PREFIX + cache_key(model, endpoint, request)
        self._pending[key] = json.dumps([model, time.time(), result.content, usage, result.finish_reason])
        self._bound()
        due = time.monotonic() - self._last_flush >= self._flush_interval_s
        if (due or len(self._pending) >= self._flush_every) and self._up():
            self._flush()

    @property
    def disabled(self) -> str | None:
        """What Redis outages cost this run, if anything."""
        if not self._outages and not self.unstored:
            return None
        lost = f"{self.unstored} answers were not stored" if self.unstored else ""
        if not self._outages:
            return lost
        down_s = self._down_s + (time.monotonic() - self._down_since if self._down_since is not None else 0.0)
        times = "once" if self._outages == 1 else f"{self._outages} times"
        return f"Redis did not answer ({times}, {down_s:.1f} s in all)" + (f"; {lost}" if lost else "")

    async def _fetch(self, key: str) -> _Value | None:
        loop = asyncio.get_running_loop()
        asked: asyncio.Future[_Value | None] = loop.create_future()
        self._asks.append((key, asked))
        if len(self._asks) == 1:  # the first of a batch: those asked before the loop comes round go with it
            loop.call_soon(self._send_asks, loop)
        return await asked

    def _send_asks(self, loop: asyncio.AbstractEventLoop) -> None:
        asks, self._asks = self._asks[:MAX_LOOKUPS], self._asks[MAX_LOOKUPS:]
        if self._asks:
            loop.call_soon(self._send_asks, loop)
        redis = self._redis
        if redis is None or not asks:
            _settle(asks, None)
            return
        keys = [key for key, _ in asks]
        self._on_worker(loop, lambda: _strings(redis.mget(keys)), lambda got: self._answered(asks, got))

    def _answered(self, asks: list[tuple[str, asyncio.Future[_Value | None]]], got: Future[list[Any]]) -> None:
        values = got.result() if self._answers(got) else None
        for index, (_, asked) in enumerate(asks):
            if not asked.done():
                asked.set_result(values[index] if values is not None else None)

    def _flush(self) -> None:
        """Hand what is pending to the worker, as one pipeline."""
        self._last_flush = time.monotonic()
        redis = self._redis
        if not self._pending or redis is None:
            return
        batch, self._pending = self._pending, {}
        self._writing.update(batch)
        expiry = self.ttl_s

        def write() -> None:
            _write(redis, batch, expiry)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # put from a script, outside any loop: it may wait
            done: Future[None] = Future()
            _complete(done, write)
            self._written(batch, done)
            return
        self._on_worker(loop, write, lambda done: self._written(batch, done))

    def _written(self, batch: dict[str, _Value], done: Future[None]) -> None:
        self._probing = False
        for key in batch:
            if self._writing.get(key) is batch[key]:
                del self._writing[key]
        if not self._answers(done):
            # Not written: back in the queue, unless a newer answer took its place meanwhile.
            self._pending = {**batch, **self._pending}
            self._bound()
        else:
            self.stored += len(batch)

    # -- outages: one warning each way ------------------------------------------------------------

    def _up(self) -> bool:
        """Whether Redis answers, as far as is known; while it does not, it is asked again now and then:
        by writing what is held back, if anything is (a Redis that refuses writes, out of memory or a
        read-only replica, still answers a PING, and must not be taken back only to fail again)."""
        if self._down_since is None:
            return True
        now = time.monotonic()
        redis = self._redis
        if not self._probing and now >= self._next_probe and redis is not None:
            self._probing = True
            self._next_probe = now + PROBE_S
            if self._pending:
                self._flush()
                return self._down_since is None
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                done: Future[Any] = Future()
                _complete(done, redis.ping)
                self._probed(done)
            else:
                self._on_worker(loop, redis.ping, self._probed)
        return self._down_since is None

    def _probed(self, done: Future[Any]) -> None:
        self._probing = False
        if self._answers(done) and self._pending:
            self._flush()

    def _answers(self, done: Future[Any]) -> bool:
        """Whether Redis did what the worker asked; if not, the run goes on without it, saying so once."""
        if done.cancelled():  # dropped at close, not Redis's doing
            return False
        exc = done.exception()
        if exc is None:
            if self._down_since is not None:
                down_s = time.monotonic() - self._down_since
                self._down_s += down_s
                self._down_since = None
                self._warn(f"{self.where}: Redis answers again after {down_s:.1f} s: the response cache is back on")
            return True
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._next_probe = self._down_since + PROBE_S
            self._outages += 1
            self._warn(
                f"{self.where}: Redis does not answer ({_cause(exc)}): requests go to the provider, and their"
                f" answers are held back (up to {MAX_HELD:,}) until it answers again"
            )
        return False

    def _bound(self) -> None:
        over = len(self._pending) + len(self._writing) - MAX_HELD
        for key in list(self._pending)[: max(0, over)]:
            del self._pending[key]
            self.unstored += 1

    def _on_worker(
        self, loop: asyncio.AbstractEventLoop, job: Callable[[], T], then: Callable[[Future[T]], None]
    ) -> None:
        """Run `job` on the worker thread, then `then` on the loop. A loop closed by then never hears of
        it: what the worker was writing is still in `_writing`, and close() writes it."""

        def back(done: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(then, done)

        try:
            self._worker.submit(job).add_done_callback(back)
        except RuntimeError:  # the worker has shut down: the cache is closed, and that is no outage
            dropped: Future[T] = Future()
            dropped.cancel()
            then(dropped)

    def _warn(self, message: str) -> None:
        if self._on_warning is not None:
            self._on_warning(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # -- outside a run: a person's commands, and the end --------------------------------------------

    def stats(self) -> CacheStats:
        redis = self._usable()
        self._store_held(redis)
        by_model: dict[str, int] = {}
        size = 0
        for keys, values in self._walk(redis):
            for key, value in zip(keys, values, strict=True):
                if value is not None:
                    model = _model_of(value)
                    by_model[model] = by_model.get(model, 0) + 1
                    size += len(key) + len(value)
        return CacheStats(self.where, sum(by_model.values()), size, dict(sorted(by_model.items())))

    def clear(self, model: str | None = None) -> int:
        redis = self._usable()
        self._store_held(redis)
        removed = 0
        with _talking(self.where):
            for keys, values in self._walk(redis):
                doomed = [
                    k for k, v in zip(keys, values, strict=True) if v is not None and model in (None, _model_of(v))
                ]
                if doomed:
                    removed += int(redis.unlink(*doomed))
        return removed

    def close(self) -> None:
        """Store what is still held back, if Redis answers within a few seconds; then let go of it."""
        redis, self._redis = self._redis, None
        if redis is None:
            return
        self._worker.shutdown(wait=True, cancel_futures=True)  # what it was still to write is in `_writing`
        held = {**self._writing, **self._pending}
        self._writing, self._pending = {}, {}
        try:
            if held:
                _write(redis, held, self.ttl_s, patience_s=self._close_timeout_s)
                self.stored += len(held)
        except Exception as exc:  # closing never raises: the answers are in the output
            self.unstored += len(held)
            if self._down_since is None:  # an outage already said so, and `disabled` counts them
                self._warn(f"{self.where}: {len(held)} answers were not stored in the response cache ({_cause(exc)})")
        finally:
            with contextlib.suppress(Exception):
                redis.close()

    def __enter__(self) -> RedisCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _usable(self) -> Redis:
        if self._redis is None:
            raise InputError("the response cache is closed", source=self.where)
        return self._redis

    def _store_held(self, redis: Redis) -> None:
        held = {**self._writing, **self._pending}
        if held:
            with _talking(self.where):
                _write(redis, held, self.ttl_s)
            self.stored += len(held)
            self._writing, self._pending = {}, {}

    def _walk(self, redis: Redis) -> Iterator[tuple[list[str], list[str | None]]]:
        """Every key of the cache with its value, a SCAN page at a time."""
        with _talking(self.where):
            cursor = None
            while cursor != 0:
                cursor, raw = redis.scan(cursor or 0, match=PREFIX + "*", count=_SCAN_COUNT)
                keys = _strings(raw)
                if keys:
                    yield keys, _strings(redis.mget(keys))


def _connect(url: str, where: str) -> Redis:
    """A client for `url`, asked once now: a Redis that does not answer at the start is the user's to fix."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    check_db(url, "--cache (cache=)")
    try:
        client = Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 0)
        )
    except ValueError as exc:
        raise InputError(f"not a Redis URL ({exc})", source=where) from exc
    with _talking(where, "cannot use it as a response cache"):
        client.ping()
    return client


@contextlib.contextmanager
def _talking(where: str, doing: str = "Redis did not answer") -> Iterator[None]:
    """Outside a run, a Redis that fails is one clear line naming it."""
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as exc:
        raise InputError(f"{doing} ({_cause(exc)})", source=where) from exc


def _write(redis: Redis, batch: dict[str, _Value], ttl_s: float | None, patience_s: float = 0.0) -> None:
    """One pipeline of SETs; with `patience_s` (at close), tried again until then while Redis fails."""
    expiry = int(ttl_s * 1000) if ttl_s is not None else None
    give_up = time.monotonic() + patience_s
    while True:
        pipe = redis.pipeline(transaction=False)
        for key, value in batch.items():
            pipe.set(key, value, px=expiry)
        try:
            # Errors unraised, so that the first is raised alone: redis-py's own message for a pipeline
            # would quote the command, answer and all, into the warning.
            failed = [reply for reply in pipe.execute(raise_on_error=False) if isinstance(reply, Exception)]
            if failed:
                raise failed[0]
            return
        except Exception:
            if time.monotonic() + PROBE_S / 4 >= give_up:
                raise
            time.sleep(PROBE_S / 4)


def _complete(done: Future[T], job: Callable[[], T]) -> None:
    try:
        done.set_result(job())
    except Exception as exc:  # handed to _answers, which reports it
        done.set_exception(exc)


def _settle(asks: list[tuple[str, asyncio.Future[_Value | None]]], value: _Value | None) -> None:
    for _, asked in asks:
        if not asked.done():
            asked.set_result(value)


def _strings(raw: Any) -> list[Any]:
    return [item.decode() if isinstance(item, bytes) else item for item in raw]


def _decoded(request: Request, model: str, value: _Value) -> Result | None:
    try:
        kept_model, _, content, usage, finish_reason = json.loads(value)
    except (ValueError, TypeError):  # a damaged value is a miss, not an answer
        return None
    if kept_model != model:
        return None
    return answer_from(request, model, content, usage, finish_reason)


def _model_of(value: str) -> str:
    try:
        return str(json.loads(value)[0])
    except (ValueError, TypeError, IndexError, KeyError):
        return "(damaged)"


def _cause(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
