"""The response cache in Redis: the SQLite cache's keys and rules, shared by processes on any host, and a
Redis that fails mid-run never costs an answer.

Every test talks to a real redis-server (the `redis_server` fixture); the end-to-end ones run each worker
as its own process against the fake provider, a real server process too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import FakeServer, read_jsonl, reaped, run_cli, write_jsonl
from redis_server import RedisServer, free_port

from llmgather.cache import cache_key, open_cache
from llmgather.cache_redis import PREFIX, RedisCache
from llmgather.errors import InputError
from llmgather.types import ErrorInfo, Request, Result, Usage

SECRET = "sk-test-never-stored-anywhere"

# One worker: the run a `--cache redis://...` run makes, as its own process. It prints each answer's id as
# it is written (the test paces an outage by them), then the cache's counters, and warnings on stderr.
WORKER = """
import asyncio, json, sys
from llmgather.cache import open_cache
from llmgather.client import run_config
from llmgather.runner import Run
from llmgather.types import Request

cache_url, api, source, out = sys.argv[1:5]
requests = [Request.from_prompt(r["id"], r["prompt"]) for r in map(json.loads, open(source))]
config, _ = run_config("openai/fake", api_base=api, api_key=sys.argv[5], concurrency=8, max_retries=0)
lines = []

def keep(result):
    lines.append(result.to_dict())
    print(result.id, flush=True)

async def go(cache):
    async with Run(config, cache=cache) as run:
        await run.drive(requests, keep)

with open_cache(cache_url, on_warning=lambda m: print("warning:", m, file=sys.stderr, flush=True)) as cache:
    asyncio.run(go(cache))
with open(out, "w") as f:
    f.writelines(json.dumps(line) + "\\n" for line in lines)
print(json.dumps({"hits": cache.hits, "stored": cache.stored, "unstored": cache.unstored,
                  "disabled": cache.disabled}), flush=True)
"""


def ask(n: int, **params: object) -> Request:
    return Request.from_prompt(n, f"question {n}", **params)


def answer(n: int) -> Result:
    return Result(id=n, model="m", content=f"answer {n}", usage=Usage(3, 2, 5), finish_reason="stop")


def lookup(cache: RedisCache, request: Request, model: str = "m") -> Result | None:
    return asyncio.run(cache.lookup(model, "e", request))


def keys_in(server: RedisServer) -> list[str]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match="*"))
    finally:
        client.close()


def start_worker(cache_url: str, api: str, source: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, cache_url, api, str(source), str(out), SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": SECRET},
    )


def finish(worker: subprocess.Popen[str]) -> tuple[dict[str, Any], str]:
    """Wait for a worker; its cache counters and its warnings."""
    stdout, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1]), stderr


def run_worker(cache_url: str, api: str, source: Path, out: Path) -> tuple[dict[str, Any], str]:
    with reaped(start_worker(cache_url, api, source, out)) as worker:
        return finish(worker)


def prompts(tmp_path: Path, ids: range, name: str = "in.jsonl") -> Path:
    return write_jsonl(tmp_path / name, [{"id": i, "prompt": f"shared {i}"} for i in ids])


def answers(path: Path) -> dict[str, dict[str, Any]]:
    return {str(line["id"]): line for line in map(json.loads, path.read_text().splitlines())}


# --- refused when opened: one line naming the URL, its password hidden -----------------------------------


def test_an_unreachable_redis_is_refused_naming_the_url_without_its_password() -> None:
    url = f"redis://worker:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(InputError) as caught:
        open_cache(url)
    message = str(caught.value)
    assert f"redis://worker:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "hunter2" not in message and "\n" not in message


def test_a_url_redis_cannot_read_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        open_cache("redis://127.0.0.1:notaport/0")
    assert "redis://127.0.0.1:notaport/0" in str(caught.value)


# --- the SQLite cache's keys and rules ----------------------------------------------------------------


def test_an_answer_comes_back_as_the_same_result_under_the_sqlite_key(redis_server: RedisServer) -> None:
    with RedisCache(redis_server.url) as cache:
        cache.put("m", "e", ask(1), answer(1))
        cache.put("m", "e", ask(2), Result(id=2, model="m", error=ErrorInfo("server_error", 500, "boom")))
    assert keys_in(redis_server) == [PREFIX + cache_key("m", "e", ask(1))]
    with RedisCache(redis_server.url) as cache:
        hit = lookup(cache, Request.from_prompt("another id", "question 1"))
        assert hit is not None and hit.cached and hit.id == "another id"
        assert (hit.content, hit.usage, hit.finish_reason) == ("answer 1", Usage(3, 2, 5), "stop")
        assert (hit.attempts, hit.cost_usd) == (0, 0.0)
        assert lookup(cache, ask(2)) is None  # a failure is never kept
        assert lookup(cache, ask(1), model="other") is None
        assert (cache.hits, cache.misses) == (1, 2)


def test_deterministic_only_keeps_to_temperature_zero(redis_server: RedisServer) -> None:
    with RedisCache(redis_server.url, deterministic_only=True) as cache:
        for request in [ask(1), ask(2, temperature=0.7), ask(3, temperature=0)]:
            assert lookup(cache, request) is None
            cache.put("m", "e", request, answer(int(request.id)))
        assert (cache.misses, cache.skipped) == (1, 2)
    assert cache.stored == 1 and keys_in(redis_server) == [PREFIX + cache_key("m", "e", ask(3, temperature=0))]


def test_writes_are_batched_and_an_expiry_is_kept(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url, flush_every=3, flush_interval_s=3600, ttl_s=600)
    cache.put("m", "e", ask(1), answer(1))
    cache.put("m", "e", ask(2), answer(2))
    assert keys_in(redis_server) == [] and lookup(cache, ask(2)) is not None  # held answers serve this run
    cache.put("m", "e", ask(3), answer(3))
    assert len(keys_in(redis_server)) == 3 and cache.stored == 3
    cache.put("m", "e", ask(4), answer(4))
    cache.close()
    assert len(keys_in(redis_server)) == 4 and cache.stored == 4
    client = redis.Redis.from_url(redis_server.url)
    assert all(0 < client.pttl(key) <= 600_000 for key in keys_in(redis_server))
    client.close()
    with pytest.raises(InputError):
        RedisCache(redis_server.url, ttl_s=0)


def test_stats_and_clear_work_on_a_redis_url(redis_server: RedisServer) -> None:
    other = redis.Redis.from_url(redis_server.url)
    other.set("someone-else:key", "theirs")  # a Redis shared with others: only the cache's keys are touched
    with RedisCache(redis_server.url) as cache:
        for i in range(5):
            cache.put("m" if i < 3 else "n", "e", ask(i), answer(i))
        stats = cache.stats()  # counts what is still held back too
        assert (stats.entries, stats.by_model) == (5, {"m": 3, "n": 2}) and stats.bytes > 0
        assert stats.where == redis_server.url
        assert cache.clear("n") == 2 and cache.stats().entries == 3
        assert cache.clear() == 3 and cache.stats().entries == 0
    assert other.get("someone-else:key") == b"theirs"
    other.close()


# --- Redis in trouble mid-run: misses and held answers, one warning each way --------------------------


def test_a_stopped_redis_makes_misses_and_holds_answers_until_it_returns(redis_server: RedisServer) -> None:
    said: list[str] = []

    async def go() -> None:
        cache = RedisCache(redis_server.url, on_warning=said.append, flush_every=1)
        cache.put("m", "e", ask(0), answer(0))
        assert await cache.lookup("m", "e", ask(0)) is not None
        await asyncio.sleep(0.2)  # written: the worker thread is done with it
        redis_server.stop()
        for i in range(1, 40):
            assert await cache.lookup("m", "e", ask(100 + i)) is None  # a miss, never an error
            cache.put("m", "e", ask(i), answer(i))
            await asyncio.sleep(0.01)
        assert len(said) == 1 and "does not answer" in said[0] and redis_server.url in said[0]
        redis_server.start()  # empty again: nothing is saved to disk
        for i in range(40, 400):  # the next probe finds it, and what was held back is written
            cache.put("m", "e", ask(i), answer(i))
            await asyncio.sleep(0.01)
            if len(said) == 2 and i >= 60:
                break
        cache.close()
        assert len(said) == 2 and "answers again" in said[1]
        assert cache.unstored == 0 and cache.disabled is not None and "once" in cache.disabled

    asyncio.run(go())
    assert len(keys_in(redis_server)) >= 59  # all of ask(1..59): the one answer written before is lost with Redis


def test_a_redis_that_refuses_writes_warns_once_not_at_every_probe(redis_server: RedisServer) -> None:
    """Out of memory (or a read-only replica), Redis still answers a PING: only a write tells it is back."""
    admin = redis.Redis.from_url(redis_server.url)
    said: list[str] = []

    async def go() -> RedisCache:
        cache = RedisCache(redis_server.url, on_warning=said.append, flush_every=1)
        admin.config_set("maxmemory", 1)  # every write is refused (OOM); reads and PING still answer
        for i in range(300):  # a few probes' worth
            cache.put("m", "e", ask(i), answer(i))
            await asyncio.sleep(0.01)
        assert len(said) == 1 and "maxmemory" in said[0] and "answer 1" not in said[0]
        admin.config_set("maxmemory", 0)
        for i in range(300, 600):
            cache.put("m", "e", ask(i), answer(i))
            await asyncio.sleep(0.01)
            if len(said) == 2:
                break
        return cache

    cache = asyncio.run(go())
    cache.close()
    assert len(said) == 2 and "answers again" in said[1]
    assert cache.unstored == 0 and cache.stored == len(keys_in(redis_server)) >= 300
    admin.close()


def test_a_hung_redis_never_holds_up_the_event_loop(redis_server: RedisServer) -> None:
    import signal

    said: list[str] = []

    async def go() -> int:
        cache = RedisCache(redis_server.url, on_warning=said.append)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            assert await cache.lookup("m", "e", ask(1)) is None  # waits out the timeout, off the loop
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        ticker.cancel()
        cache.close()
        return ticks

    assert asyncio.run(go()) >= 5
    assert len(said) == 1 and "does not answer" in said[0]


def test_answers_held_back_are_bounded(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmgather.cache_redis.MAX_HELD", 10)
    said: list[str] = []

    async def go() -> RedisCache:
        cache = RedisCache(redis_server.url, on_warning=said.append, close_timeout_s=0.1)
        redis_server.stop()
        assert await cache.lookup("m", "e", ask(0)) is None
        await asyncio.sleep(0.05)
        for i in range(25):
            cache.put("m", "e", ask(i), answer(i))
        assert cache.unstored == 15  # the oldest, dropped as the eleventh and later came
        return cache

    cache = asyncio.run(go())
    cache.close()
    assert cache.unstored == 25 and len(said) == 1  # dropped while away, then the last ten at close: one warning
    assert cache.disabled is not None and "25 answers were not stored" in cache.disabled


# --- end to end: workers as processes, against the fake provider ----------------------------------------


def test_a_second_run_is_answered_from_redis_and_the_key_is_never_stored(
    redis_server: RedisServer, server: FakeServer, tmp_path: Path
) -> None:
    source = prompts(tmp_path, range(30))
    first, said = run_worker(redis_server.url, server.url, source, tmp_path / "1.jsonl")
    assert (first["hits"], first["stored"], said) == (0, 30, "")
    assert server.stats()["requests"] == 30
    second, said = run_worker(redis_server.url, server.url, source, tmp_path / "2.jsonl")
    assert (second["hits"], second["stored"], said) == (30, 0, "")
    assert server.stats()["requests"] == 30  # nothing sent
    one, two = answers(tmp_path / "1.jsonl"), answers(tmp_path / "2.jsonl")
    assert all(two[i]["cached"] and two[i]["content"] == one[i]["content"] for i in one) and len(two) == 30
    client = redis.Redis.from_url(redis_server.url)
    assert not any(SECRET.encode() in (key + (client.get(key) or b"")) for key in client.scan_iter())
    client.close()


def test_two_processes_share_one_redis_cache(redis_server: RedisServer, server: FakeServer, tmp_path: Path) -> None:
    halves = [prompts(tmp_path, range(0, 40), "a.jsonl"), prompts(tmp_path, range(40, 80), "b.jsonl")]
    workers = [start_worker(redis_server.url, server.url, s, tmp_path / f"out-{s.name}") for s in halves]
    with reaped(workers[0]), reaped(workers[1]):
        counters = [finish(worker)[0] for worker in workers]
    assert [c["stored"] for c in counters] == [40, 40] and server.stats()["requests"] == 80
    both, said = run_worker(redis_server.url, server.url, prompts(tmp_path, range(80)), tmp_path / "all.jsonl")
    assert (both["hits"], said) == (80, "") and server.stats()["requests"] == 80


@pytest.mark.parametrize("comes_back", [False, True], ids=["stays-down", "comes-back"])
def test_redis_killed_mid_run_loses_no_answer_and_warns_once(
    redis_server: RedisServer, fake_server: Any, tmp_path: Path, comes_back: bool
) -> None:
    api = fake_server("--latency", "0.05").url
    source = prompts(tmp_path, range(400))
    out = tmp_path / "out.jsonl"
    with reaped(start_worker(redis_server.url, api, source, out)) as worker:
        assert worker.stdout is not None
        seen = [worker.stdout.readline() for _ in range(40)]
        redis_server.stop()
        seen += [worker.stdout.readline() for _ in range(80)]
        if comes_back:
            redis_server.start()
        counters, said = finish(worker)
    assert len(seen) == 120 and all(line.strip() for line in seen)
    got = answers(out)
    assert len(got) == 400 and all(line["error"] is None for line in got.values())  # no answer lost
    warnings = said.splitlines()
    assert warnings[0].startswith("warning: ") and "does not answer" in warnings[0]
    if not comes_back:
        assert len(warnings) == 1 and counters["unstored"] > 0 and "once" in counters["disabled"]
        return
    assert len(warnings) == 2 and "answers again" in warnings[1] and counters["unstored"] == 0
    # Redis came back empty; what was answered after it went is there, and a rerun pays for the rest only.
    kept = len(keys_in(redis_server))
    assert kept >= 400 - 40 - 8 - 8
    again, _ = run_worker(redis_server.url, api, source, tmp_path / "again.jsonl")
    assert again["hits"] == kept and again["stored"] == 400 - kept


# --- through the CLI and the Python API ---------------------------------------------------------------


def test_the_cli_caches_in_redis_and_its_cache_commands_read_it(
    redis_server: RedisServer, server: FakeServer, tmp_path: Path
) -> None:
    source = prompts(tmp_path, range(20))
    for n in (1, 2):
        out = tmp_path / f"{n}.jsonl"
        done = run_cli(
            "run",
            str(source),
            "-o",
            str(out),
            "-m",
            "openai/fake",
            "--api-base",
            server.url,
            "--cache",
            redis_server.url,
        )
        assert done.returncode == 0, done.stderr
    assert "20 answers from the cache, 0 stored" in done.stderr and server.stats()["requests"] == 20
    assert all(line["cached"] for line in read_jsonl(out)) and len(read_jsonl(out)) == 20
    stats = run_cli("cache", "stats", redis_server.url)
    lines = stats.stdout.splitlines()
    assert (
        stats.returncode == 0
        and lines[0].startswith(f"{redis_server.url}: 20 answers")
        and lines[1:] == ["  openai/fake: 20"]
    )
    cleared = run_cli("cache", "clear", redis_server.url, "-m", "openai/fake")
    assert cleared.returncode == 0 and f"removed 20 answers from {redis_server.url}" in cleared.stdout
    assert keys_in(redis_server) == []


def test_the_cli_refuses_an_unreachable_redis_cache_before_touching_the_output(
    server: FakeServer, tmp_path: Path
) -> None:
    source = prompts(tmp_path, range(3))
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n")
    url = f"redis://someone:hunter2@127.0.0.1:{free_port()}/0"
    done = run_cli(
        "run", str(source), "-o", str(out), "--overwrite", "-m", "openai/fake", "--api-base", server.url, "--cache", url
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "hunter2" not in done.stderr
    assert "redis://someone:***@127.0.0.1" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert out.read_text() == "kept\n" and server.stats()["requests"] == 0
    stats = run_cli("cache", "stats", url)
    assert stats.returncode == 2 and "redis://someone:***@" in stats.stderr and "hunter2" not in stats.stderr


def test_the_python_api_takes_a_redis_url_or_a_cache_object(redis_server: RedisServer, server: FakeServer) -> None:
    import llmgather

    asked = [f"api {i}" for i in range(10)]
    first = llmgather.run(asked, model="openai/fake", api_base=server.url, api_key="k", cache=redis_server.url)
    with RedisCache(redis_server.url) as cache:
        again = llmgather.run(asked, model="openai/fake", api_base=server.url, api_key="k", cache=cache)
    assert not any(r.cached for r in first) and all(r.cached for r in again) and cache.hits == 10
    assert [r.content for r in again] == [r.content for r in first] and server.stats()["requests"] == 10


def test_a_database_that_is_not_a_number_is_refused(tmp_path: Path, redis_server: RedisServer) -> None:
    """redis-py would read it as database 0, and the answers would land where nobody looks for them."""
    result = run_cli("cache", "stats", redis_server.url.rsplit("/", 1)[0] + "/answers")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "not a number" in result.stderr
