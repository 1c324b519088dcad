"""The response cache: SQLite in WAL mode, so that several runs (processes) can share one file.

The key is a hash of everything that changes the answer: the model, the endpoint and the request's
messages and parameters, canonically encoded. The API key is not part of it and is never stored. A
request sampled above temperature 0 may answer differently each time, so it is cached only when asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmgather.types import Request, Result, Usage

# Parameters that change how an answer arrives, not what it says.
_NOT_IN_KEY = frozenset({"stream", "stream_options", "user", "metadata", "store", "timeout", "request_timeout"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    content TEXT,
    usage TEXT,
    finish_reason TEXT
)
"""


@dataclass(frozen=True, slots=True)
class CacheStats:
    path: Path
    entries: int
    bytes: int
    by_model: dict[str, int]


def cache_key(model: str, endpoint: str, request: Request) -> str:
    params = {k: v for k, v in request.params.items() if k not in _NOT_IN_KEY}
    canonical = json.dumps(
        {"model": model, "endpoint": endpoint, "messages": request.messages, "params": params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_deterministic(request: Request) -> bool:
    """Only temperature 0 asks for the same answer every time; an unset temperature is the provider's default, 1."""
    temperature = request.params.get("temperature")
    return isinstance(temperature, int | float) and temperature == 0


class ResponseCache:
    """Answers kept by request. Implements the engine's `ResultCache`."""

    def __init__(self, path: str | os.PathLike[str], *, nondeterministic: bool = False) -> None:
        self.path = Path(path)
        self.nondeterministic = nondeterministic
        self._db = _connect(self.path)
        self.hits = 0
        self.misses = 0
        self.not_cacheable = 0

    def get(self, model: str, endpoint: str, request: Request) -> Result | None:
        if not (self.nondeterministic or is_deterministic(request)):
            self.not_cacheable += 1
            return None
        row = self._db.execute(
            "SELECT content, usage, finish_reason FROM responses WHERE key = ?", (cache_key(model, endpoint, request),)
        ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        content, usage, finish_reason = row
        return Result(
            id=request.id,
            model=model,
            content=content,
            usage=Usage(**json.loads(usage)) if usage else None,
            attempts=0,
            cost_usd=0.0,
            finish_reason=finish_reason,
            cached=True,
        )

    def put(self, model: str, endpoint: str, request: Request, result: Result) -> None:
        if not result.ok or not (self.nondeterministic or is_deterministic(request)):
            return
        usage = json.dumps(result.usage.to_dict()) if result.usage is not None else None
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)",
                (cache_key(model, endpoint, request), model, time.time(), result.content, usage, result.finish_reason),
            )

    def stats(self) -> CacheStats:
        rows = self._db.execute("SELECT model, count(*) FROM responses GROUP BY model ORDER BY model").fetchall()
        size = sum(p.stat().st_size for p in _files(self.path) if p.exists())
        return CacheStats(self.path, sum(n for _, n in rows), size, dict(rows))

    def clear(self, model: str | None = None) -> int:
        with self._db:
            if model is None:
                removed = self._db.execute("DELETE FROM responses").rowcount
            else:
                removed = self._db.execute("DELETE FROM responses WHERE model = ?", (model,)).rowcount
        self._db.execute("VACUUM")
        return int(removed)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(path: Path) -> sqlite3.Connection:
    # Created 0600 before SQLite opens it: answers may be private. SQLite gives its -wal and -shm files
    # the database file's permissions.
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    _with_retries(lambda: db.execute("PRAGMA journal_mode=WAL"))
    db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable against a crashed process, which is the risk here
    _with_retries(lambda: db.execute(_SCHEMA))
    return db


def _with_retries(step: Callable[[], object], attempts: int = 50) -> None:
    """SQLite answers 'database is locked' at once, without waiting out its timeout, when two processes
    switch a new file to WAL together: the loser tries again."""
    for attempt in range(attempts):
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def describe(stats: CacheStats) -> list[str]:
    lines = [f"{stats.path}: {stats.entries} answers, {stats.bytes / 1e6:.1f} MB"]
    lines += [f"  {model}: {count}" for model, count in stats.by_model.items()]
    return lines
