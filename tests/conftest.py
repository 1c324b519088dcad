"""Shared fixtures: the fake provider as a real server process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
# LiteLLM, when a test imports it, would otherwise try to fetch its price map from the network for seconds.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
STARTUP_TIMEOUT_S = 20.0
"""How long a fake server may take to say it listens before it is killed as hung."""


@dataclass
class FakeServer:
    process: subprocess.Popen[str]
    url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/_fake/stats", timeout=5) as response:
            return json.load(response)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_fake_server(*args: str) -> FakeServer:
    process = subprocess.Popen(
        [sys.executable, "-m", "llmgather.fake", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = first_line(process, STARTUP_TIMEOUT_S)
    if line is None or not line.startswith("listening on "):
        process.kill()
        process.wait()
        why = f"no word within {STARTUP_TIMEOUT_S:g} s, killed" if line is None else f"it said {line!r}"
        raise RuntimeError(f"fake server (pid {process.pid}) did not start: {why}")
    return FakeServer(process, line.split()[-1])


def first_line(process: subprocess.Popen[str], timeout_s: float) -> str | None:
    """The process's first line of output ("" if it ended without one), or None if none came in time."""
    stdout = process.stdout
    assert stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # A thread, as readline() has no timeout; killing a hung process ends it (its readline gets end of file).
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        return None


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeServer]]:
    """Start fake providers with the given flags; all are stopped at the end of the test."""
    servers: list[FakeServer] = []

    def start(*args: str) -> FakeServer:
        server = start_fake_server(*args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(fake_server: Callable[..., FakeServer]) -> FakeServer:
    return fake_server()


def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`llmgather ...` as a user runs it: a separate process, no terminal."""
    full_env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llmgather", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


@contextlib.contextmanager
def reaped(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """`process`, killed at the end if it is still running: a failed assertion leaves no run behind."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def start_cli(*args: str) -> subprocess.Popen[str]:
    """`llmgather ...` started in the background, as a second user on the same key would."""
    return subprocess.Popen(
        [sys.executable, "-m", "llmgather", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key"},
    )


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


_LOCKER = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)\n"
    "db.execute('BEGIN EXCLUSIVE')\n"
    "db.execute('CREATE TABLE IF NOT EXISTS held (x)')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "db.execute('ROLLBACK')\n"
)


@pytest.fixture
def locker() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Another process that holds `BEGIN EXCLUSIVE` on an SQLite file until `release` (or the test's end)."""
    started: list[subprocess.Popen[str]] = []

    def lock(path: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", _LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        return process

    yield lock
    for process in started:
        release(process)


def release(process: subprocess.Popen[str]) -> None:
    """Let a `locker` process go."""
    if process.poll() is None:
        process.communicate(timeout=10)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless browser the report tests look at pages with; they are skipped without one."""
    from browser import MISSING, find_chromium

    found = find_chromium()
    if found is None:
        pytest.skip(MISSING)
    return found


def complete_once(backend: Any, prompt: str, max_retries: int = 3, **params: Any) -> Any:
    """One request through an engine over `backend` (no backoff waits); the backend is closed after."""
    import asyncio

    from llmgather.engine import Engine
    from llmgather.limits import Limits
    from llmgather.retry import RetryPolicy
    from llmgather.types import Request

    async def go() -> Any:
        engine = Engine(backend, limits=Limits(concurrency=2), retry=RetryPolicy.testing(max_retries), timeout_s=30)
        try:
            return await engine.complete(Request.from_prompt("r", prompt, **params))
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, on a free 127.0.0.1 port (see `redis_server.py`)."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder).start()
    try:
        yield server
    finally:
        server.stop()
