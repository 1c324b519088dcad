"""The shared state in Redis: `admit.lua` run atomically, one round trip per request, and the live state of
every quota kept there for `llmgather shared status`.

redis-py is imported here only, when a run asks for `--shared`: a run without it never pays its import.
Its own retries are off: a store that does not answer is the limiter's to handle (it paces alone meanwhile),
and a retry would only hold every waiting request up for longer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from llmgather.errors import InputError
from llmgather.limits.shared_state import (
    BLIND_POLL_S,
    INITIAL_WINDOW,
    MEMBER_TTL_S,
    STATE_TTL_S,
    Ask,
    Four,
    Grant,
    Misconfigured,
    QuotaId,
    Unreachable,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

PREFIX = "llmgather:quota:"
MEMBERS_PREFIX = "llmgather:members:"
TIMEOUT_S = 1.0
"""A store this slow is as good as gone: the limiter paces alone until it answers again."""
MAX_CONNECTIONS = 16
PROBE_KEY = "llmgather:probe"
PROBE_TTL_MS = 10_000
"""Per process: asks beyond it wait for a connection rather than open more."""


def redacted(url: str) -> str:
    """`url` with any password replaced, for messages: in the user part, or a `password=` in the query (redis-py
    takes both). Works on the text, so that a URL too broken to parse (a port out of range) is redacted too."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        parts = parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}")
    if "password=" in parts.query:
        query = ["password=***" if pair.startswith("password=") else pair for pair in parts.query.split("&")]
        parts = parts._replace(query="&".join(query))
    return urlunsplit(parts)


@dataclass(frozen=True, slots=True)
class QuotaView:
    """One quota as `llmgather shared status` shows it."""

    endpoint: str
    model: str
    ceilings: Four
    """Per minute, 0.0 where unknown."""
    paces: Four
    """Per second, as last asked for."""
    members: int
    cooling_s: float
    queued_s: float
    """How far ahead the schedule is booked: requests granted a slot that has not come yet."""
    granted: int


class RedisStore:
    def __init__(self, client: Redis, url: str) -> None:
        self._client = client
        self.where = redacted(url)
        self._script = client.register_script(resources.files(__package__).joinpath("admit.lua").read_text())

    @classmethod
    def connect(cls, url: str) -> RedisStore:
        """A store for `url` (redis://, rediss:// or unix://); nothing is sent until it is used.

        A database that is not a number is refused here (`InputError`): redis-py would quietly use database 0."""
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        check_db(url, "--shared (shared=)")
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(Redis(connection_pool=pool), url)

    async def admit(self, quota: QuotaId, ask: Ask) -> Grant:
        key = quota.key
        args: list[Any] = [
            ask.member,
            *ask.amounts,
            *ask.rates,
            *ask.ceilings,
            *ask.corrections,
            ask.hold_s,
            ask.max_wait_s,
            1 if ask.blind else 0,
            INITIAL_WINDOW,
            MEMBER_TTL_S,
            STATE_TTL_S,
            BLIND_POLL_S,
            quota.endpoint,
            quota.model,
            ask.tolerance_s,
        ]
        reply = await self._call(self._script(keys=[PREFIX + key, MEMBERS_PREFIX + key], args=args))
        return Grant(
            admitted=int(reply[0]) == 1,
            wait_s=float(reply[1]),
            ceilings=_four(reply[2:6]),
            members=int(reply[6]),
            cooling_s=float(reply[7]),
            granted=int(reply[8]),
            paces=_four(reply[9:13]),
        )

    async def ping(self) -> None:
        """Whether the store takes an admission: a write, since a read-only replica or a Redis out of memory
        answers a PING but refuses every ask (a probe that only pinged would find it back every quarter second)."""
        await self._call(self._client.set(PROBE_KEY, "1", px=PROBE_TTL_MS))

    async def quotas(self) -> list[QuotaView]:
        """Every quota kept here, as it stands now."""
        client = self._client
        seconds, micros = await self._call(client.time())
        now = seconds + micros / 1e6
        views, cursor, keys = [], None, []
        while cursor != 0:  # SCAN, a page at a time, each page through `_call`: one line if Redis goes mid-way
            cursor, page = await self._call(client.scan(cursor or 0, match=PREFIX + "*", count=100))
            keys.extend(page)
        for raw in dict.fromkeys(keys):  # SCAN may return a key twice
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            fields = {k.decode(): v.decode() for k, v in (await self._call(client.hgetall(key))).items()}
            members = await self._call(client.zcount(MEMBERS_PREFIX + key[len(PREFIX) :], now - MEMBER_TTL_S, "+inf"))
            if fields:
                views.append(_view(fields, now, int(members)))
        return sorted(views, key=lambda view: (view.endpoint, view.model))

    async def aclose(self) -> None:
        # Built over a pool of our own, the client would leave the pool's connections open on its own close.
        await self._client.aclose(close_connection_pool=True)

    async def _call(self, awaitable: Any) -> Any:
        from redis.exceptions import ConnectionError, RedisError, TimeoutError

        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
                # The idle pooled connections went with the server: dropped now, rather than each failing once
                # after it is back (every failure would read as the store lost again). Not those in use: dropped
                # under another ask, redis-py fails with an AttributeError, not a RedisError.
                with contextlib.suppress(RedisError, OSError):
                    await self._client.connection_pool.disconnect(inuse_connections=False)
            kind = Misconfigured if _misconfigured(exc) else Unreachable
            raise kind(f"{self.where}: {_why(exc)}") from exc


def check_db(url: str, flag: str) -> None:
    """redis-py reads a database that is not a number as database 0: refuse it, naming `flag`."""
    parts = urlsplit(url)
    db = parts.path.strip("/") if parts.scheme in ("redis", "rediss") else ""
    for query in parts.query.split("&"):
        if query.startswith("db="):
            db = query[3:]
    if db and not db.isdigit():
        raise InputError(f"{flag}: the database in {redacted(url)} is not a number, as in redis://host:6379/0")


def _misconfigured(exc: BaseException) -> bool:
    """A mistake in the URL or the server's setup, that waiting will not mend (a read-only replica or a full
    memory may: a failover, a key expiring)."""
    from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError

    if isinstance(exc, (AuthenticationError, AuthorizationError, NoPermissionError)):
        return True
    said = str(exc)
    return "Protocol Error" in said or "DB index is out of range" in said


def _why(exc: BaseException) -> str:
    """What went wrong, in a few words a person can act on (redis-py's own can run to a paragraph)."""
    from redis.exceptions import (
        AuthenticationError,
        NoPermissionError,
        OutOfMemoryError,
        ReadOnlyError,
        ResponseError,
    )

    said = str(exc).split(" script: ")[0].strip() or type(exc).__name__
    if isinstance(exc, AuthenticationError):
        if "HELLO must be called" in said or said.startswith(("NOAUTH", "Authentication required")):
            return "it asks for a password: give it in the URL, as in redis://:PASSWORD@host:6379/0"
        return f"it refused the password or user in the URL ({said})"
    if isinstance(exc, ReadOnlyError):
        return f"it is a read-only replica: give the primary's URL ({said})"
    if isinstance(exc, OutOfMemoryError):
        return f"it is out of memory and refuses writes ({said})"
    if isinstance(exc, NoPermissionError):
        return f"its user in the URL may not run the admission script ({said})"
    if "DB index is out of range" in said:
        return f"it has no such database ({said})"
    if isinstance(exc, ResponseError):
        return f"it refused the request ({said})"
    if "Protocol Error" in said:
        return f"what answers there does not speak Redis ({said})"
    return said


def _four(values: Any) -> Four:
    a, b, c, d = (float(value) for value in values)
    return (a, b, c, d)


def _view(fields: dict[str, str], now: float, members: int) -> QuotaView:
    def number(name: str) -> float:
        return float(fields.get(name) or 0.0)

    tat = max(number(f"tat{k}") for k in range(1, 5))
    return QuotaView(
        endpoint=fields.get("endpoint", ""),
        model=fields.get("model", ""),
        ceilings=_four(number(f"ceiling{k}") for k in range(1, 5)),
        paces=_four(number(f"pace{k}") for k in range(1, 5)),
        members=members,
        cooling_s=max(0.0, number("cool_until") - now),
        queued_s=max(0.0, tat - now),
        granted=int(number("granted")),
    )
