"""The response cache: SQLite in WAL mode, so that several runs (processes) can share one file; or
Redis (`cache_redis.py`, the same keys and rules), so that workers on several hosts can share it.

The key is a versioned hash of everything that changes the answer: the model, the endpoint and
`Request.canonical()`. The API key is not part of it and is never stored. Every request is cached, as
the user sent it; `deterministic_only` keeps to temperature 0, the one setting that asks for the same
answer every time.

The cache never costs an answer. A file that cannot serve as a cache is refused when it is opened
(`InputError`, naming it). Once a run is going, `get` and `put` never raise: corruption or a failing disk
disables the cache with one warning, and the run goes on. The engine calls them from the event loop, so
SQLite never waits there for long: reads have a short busy timeout (a locked read is a miss), and writes
are buffered and flushed in batches; a flush that meets a lock is tried again at the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmgather.config import is_redis_url
from llmgather.errors import InputError
from llmgather.types import Request, Result, Usage

if TYPE_CHECKING:
    from llmgather.cache_redis import RedisCache

KEY_VERSION = "v2"
"""Leads every key: a change of key scheme changes it, so an old key can never serve a new request."""

# Named and append-only: a file records the names it has applied, and only the rest are run. Never edit
# or reorder one that has shipped; add the next step at the end.
MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "001_responses",
        """CREATE TABLE IF NOT EXISTS responses (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            created REAL NOT NULL,
            content TEXT,
            usage TEXT,
            finish_reason TEXT
        )""",
    ),
    # Keys written before the version tag can never be looked up again: they only take room and counts.
    ("002_drop_unversioned_keys", "DELETE FROM responses WHERE instr(key, ':') = 0"),
)

_OPEN_PATIENCE_S = 3.0
"""How long opening waits, in all, for another process's lock: one migrating the same file is done well
within it; one holding the file locked for longer is reported, not waited out silently."""
_RUN_BUSY_MS = 25  # the longest a get or a flush may hold up the event loop waiting for a lock
_MAX_PENDING = 10_000  # answers held back by a lock that will not lift: then the cache gives up

_Row = tuple[str, str, float, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class CacheStats:
    where: str
    """The file, or the Redis URL (its password hidden)."""
    entries: int
    bytes: int
    by_model: dict[str, int]


def open_cache(
    where: str | os.PathLike[str],
    *,
    deterministic_only: bool = False,
    on_warning: Callable[[str], None] | None = None,
    ttl_s: float | None = None,
) -> ResponseCache | RedisCache:
    """The cache at `where`: a Redis URL or an SQLite file. One that cannot serve is refused now (`InputError`)."""
    if is_redis_url(where):
        from llmgather.cache_redis import RedisCache

        return RedisCache(str(where), deterministic_only=deterministic_only, on_warning=on_warning, ttl_s=ttl_s)
    if ttl_s is not None:
        raise InputError("an expiry is for a cache kept in Redis: an SQLite cache keeps its answers", source=str(where))
    return ResponseCache(where, deterministic_only=deterministic_only, on_warning=on_warning)


def cache_key(model: str, endpoint: str, request: Request) -> str:
    head = json.dumps([model, endpoint], ensure_ascii=False, separators=(",", ":"))
    return f"{KEY_VERSION}:{hashlib.sha256((head + request.canonical()).encode()).hexdigest()}"


def is_deterministic(request: Request) -> bool:
    """Only temperature 0 asks for the same answer every time; an unset temperature is the provider's default, 1."""
    temperature = request.params.get("temperature")
    return isinstance(temperature, int | float) and temperature == 0


class ResponseCache:
    """Answers kept by request. Implements the engine's `ResultCache`.

    Counters for the summary: `hits`, `misses`, `stored` (answers written to the file), `skipped` (not
    cacheable under `deterministic_only`) and `disabled` (why the cache stopped, if it did).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        deterministic_only: bool = False,
        on_warning: Callable[[str], None] | None = None,
        flush_every: int = 100,
        flush_interval_s: float = 0.5,
        close_timeout_s: float = 3.0,
    ) -> None:
        self.path = Path(path)
        self.deterministic_only = deterministic_only
        self.hits = 0
        self.misses = 0
        self.stored = 0
        self.skipped = 0
        self.disabled: str | None = None
        self._on_warning = on_warning
        self._flush_every = flush_every
        self._flush_interval_s = flush_interval_s
        self._close_timeout_s = close_timeout_s
        self._pending: dict[str, _Row] = {}
        self._last_flush = time.monotonic()
        self._held_up = False  # the last flush met a lock
        self._db: sqlite3.Connection | None = _open(self.path)

    async def lookup(self, model: str, endpoint: str, request: Request) -> Result | None:
        """The engine's way in: SQLite answers at once (see `get`), so the loop never waits long."""
        return self.get(model, endpoint, request)

    def get(self, model: str, endpoint: str, request: Request) -> Result | None:
        """`lookup` for a script, outside the event loop."""
        if self._db is None or self.disabled is not None:
            return None
        if self.deterministic_only and not is_deterministic(request):
            self.skipped += 1
            return None
        key = cache_key(model, endpoint, request)
        row = self._pending.get(key)
        if row is None:
            row = self._read(self._db, key)
        hit = _result(request, model, row) if row is not None else None
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    def put(self, model: str, endpoint: str, request: Request, result: Result) -> None:
        if self._db is None or self.disabled is not None or not result.ok:
            return
        if self.deterministic_only and not is_deterministic(request):
            return
        key = cache_key(model, endpoint, request)
        usage = json.dumps(result.usage.to_dict()) if result.usage is not None else None
        self._pending[key] = (key, model, time.time(), result.content, usage, result.finish_reason)
        # After a flush that met a lock, wait out the interval: a lock that holds must not cost every put.
        due = time.monotonic() - self._last_flush >= self._flush_interval_s
        if due or (len(self._pending) >= self._flush_every and not self._held_up):
            self._flush(self._db)

    @property
    def where(self) -> str:
        """The file, for messages (a `RedisCache` gives its URL)."""
        return str(self.path)

    def stats(self) -> CacheStats:
        db = self._usable()
        try:
            with _patience(db, self._close_timeout_s):
                self._flush(db)
                rows = db.execute("SELECT model, count(*) FROM responses GROUP BY model ORDER BY model").fetchall()
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc, self._close_timeout_s) from exc
        size = sum(p.stat().st_size for p in _files(self.path) if p.exists())
        return CacheStats(self.where, sum(n for _, n in rows), size, dict(rows))

    def clear(self, model: str | None = None) -> int:
        db = self._usable()
        try:
            with _patience(db, self._close_timeout_s):
                self._flush(db)
                where, args = ("", ()) if model is None else (" WHERE model = ?", (model,))
                removed = db.execute(f"DELETE FROM responses{where}", args).rowcount
                _vacuum(db)
        except sqlite3.Error as exc:
            raise _unusable(self.path, exc, self._close_timeout_s) from exc
        return int(removed)

    def close(self) -> None:
        """Store what is still buffered, waiting a few seconds at most for a lock; then let go of the file."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            if self._pending and self.disabled is None:
                with _patience(db, self._close_timeout_s):
                    self._flush(db)
                if self._pending and self.disabled is None:
                    self._disable(f"still locked by another process after {self._close_timeout_s:g} s")
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, db: sqlite3.Connection, key: str) -> _Row | None:
        try:
            row = db.execute(
                "SELECT key, model, created, content, usage, finish_reason FROM responses WHERE key = ?", (key,)
            ).fetchone()
        except sqlite3.Error as exc:
            if not _is_lock(exc):
                self._disable(_cause(exc))
            return None  # a locked read is a miss
        return row  # type: ignore[no-any-return]

    def _flush(self, db: sqlite3.Connection) -> None:
        """Write the buffered answers in one transaction. A lock leaves them buffered for the next flush."""
        self._last_flush = time.monotonic()
        if not self._pending or self.disabled is not None:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)", self._pending.values())
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self._held_up = _is_lock(exc)
            if not self._held_up:
                self._disable(_cause(exc))
            elif len(self._pending) >= _MAX_PENDING:
                self._disable(f"locked by another process while {len(self._pending)} answers waited to be stored")
            return
        self._held_up = False
        self.stored += len(self._pending)
        self._pending.clear()

    def _disable(self, why: str) -> None:
        self.disabled = why
        dropped = len(self._pending)
        self._pending.clear()
        message = f"{self.path}: response cache off for the rest of the run: {why}" + (
            f" ({dropped} answers were not stored)" if dropped else ""
        )
        if self._on_warning is not None:
            self._on_warning(message)
        else:
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _usable(self) -> sqlite3.Connection:
        if self._db is None:
            raise InputError("the response cache is closed", source=str(self.path))
        return self._db


def _result(request: Request, model: str, row: _Row) -> Result | None:
    _, _, _, content, usage, finish_reason = row
    try:
        kept = json.loads(usage) if usage else None
    except ValueError:
        return None
    return answer_from(request, model, content, kept, finish_reason)


def answer_from(
    request: Request, model: str, content: str | None, usage: object, finish_reason: str | None
) -> Result | None:
    """The `Result` a kept answer stands for (free, no attempts), or None if what was kept is damaged: a miss."""
    try:
        kept = Usage(**usage) if isinstance(usage, dict) else None
    except TypeError:
        return None
    if usage is not None and kept is None:
        return None
    return Result(
        id=request.id,
        model=model,
        content=content,
        usage=kept,
        attempts=0,
        cost_usd=0.0,
        finish_reason=finish_reason,
        cached=True,
    )


def _open(path: Path) -> sqlite3.Connection:
    _create(path)
    give_up = time.monotonic() + _OPEN_PATIENCE_S
    try:
        db = sqlite3.connect(path, timeout=_OPEN_PATIENCE_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _unusable(path, exc) from exc
    try:
        _with_retries(db, lambda: db.execute("PRAGMA journal_mode=WAL"), give_up)
        # In WAL mode: durable against a crashed process, which is the risk here.
        db.execute("PRAGMA synchronous=NORMAL")
        _with_retries(db, lambda: _check(db), give_up)
        _with_retries(db, lambda: _migrate(db), give_up)
        db.execute(f"PRAGMA busy_timeout={_RUN_BUSY_MS}")
    except sqlite3.Error as exc:
        db.close()
        raise _unusable(path, exc) from exc
    return db


def _create(path: Path) -> None:
    """Created 0600 before SQLite opens it: answers may be private. SQLite gives its -wal and -shm files
    the database file's permissions."""
    if path.is_dir():
        raise InputError("is a folder, not a cache file", source=str(path))
    if not path.parent.is_dir():
        raise InputError(f"cannot create the cache: folder {path.parent} does not exist", source=str(path))
    if path.exists():
        return
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass  # another run created it first
    except OSError as exc:
        raise InputError(f"cannot create the cache ({exc.strerror})", source=str(path)) from exc


def _check(db: sqlite3.Connection) -> None:
    """Corruption found now is the user's to fix; found mid-run, it only turns the cache off."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError("database disk image is malformed")


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")  # two runs opening one new file migrate it once
    try:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
        applied = {name for (name,) in db.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name not in applied:
                db.execute(sql)
                db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _with_retries(db: sqlite3.Connection, step: Callable[[], object], give_up: float, attempts: int = 50) -> None:
    """SQLite answers 'database is locked' at once, without waiting out its timeout, when two processes
    switch a new file to WAL together: the loser tries again. Every try, and every pause between, ends by
    `give_up` (a monotonic time), so that all of opening waits no longer than that for a lock."""
    for attempt in range(attempts):
        left_s = give_up - time.monotonic()
        db.execute(f"PRAGMA busy_timeout={max(1, int(left_s * 1000))}")
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            left_s = give_up - time.monotonic()
            if not _is_lock(exc) or attempt == attempts - 1 or left_s <= 0:
                raise
            time.sleep(min(0.02 * (attempt + 1), left_s))


@contextlib.contextmanager
def _patience(db: sqlite3.Connection, seconds: float) -> Iterator[None]:
    """Outside the run (close, stats, clear) a lock may be waited for, a few seconds at most."""
    db.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.execute(f"PRAGMA busy_timeout={_RUN_BUSY_MS}")


def _vacuum(db: sqlite3.Connection) -> None:
    """Give the room back; a run reading the file at the time keeps it for now, and that is fine."""
    try:
        db.execute("VACUUM")
    except sqlite3.OperationalError as exc:
        if not _is_lock(exc):
            raise


def _is_lock(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _cause(exc: sqlite3.Error) -> str:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return f"the file is corrupt ({exc})"
    return str(exc)


def _unusable(path: Path, exc: sqlite3.Error, waited_s: float = _OPEN_PATIENCE_S) -> InputError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        why = "not an SQLite database; give the cache a new file name, or move this file away"
    elif code == sqlite3.SQLITE_CORRUPT or "malformed" in str(exc):
        why = f"the cache file is corrupt ({exc}); delete it or move it away to start a new cache"
    elif code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        why = f"cannot write the cache here ({exc}): the file or its folder is read-only"
    elif _is_lock(exc):
        why = (
            f"another process holds the cache locked (still, after {waited_s:g} s): let it finish,"
            " or give this run another cache file"
        )
    else:
        why = f"cannot use it as a response cache ({exc})"
    return InputError(why, source=str(path))


def _files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def describe(stats: CacheStats) -> list[str]:
    lines = [f"{stats.where}: {stats.entries} answers, {stats.bytes / 1e6:.1f} MB"]
    lines += [f"  {model}: {count}" for model, count in stats.by_model.items()]
    return lines
