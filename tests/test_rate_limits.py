"""Runs against fake providers that enforce limits: every prompt succeeds, and the server counts few 429s."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeServer, start_cli, write_jsonl

import llmgather
from llmgather.fake import expected_content


def run(server: FakeServer, prompts: list[str], **options: object) -> list[llmgather.Result]:
    return llmgather.run(prompts, model="openai/fake", api_base=server.url, api_key="k", timeout=10.0, **options)


@pytest.mark.slow
@pytest.mark.parametrize("told", [True, False], ids=["told-the-limit", "learning-from-headers"])
def test_requests_per_minute(fake_server: Callable[..., FakeServer], told: bool) -> None:
    server = fake_server("--rpm", "3000", "--latency", "0.05")
    prompts = [f"paced {i}" for i in range(300)]
    results = run(server, prompts, concurrency=60, **({"rpm": 3000} if told else {}))
    assert [r.content for r in results] == [expected_content(p) for p in prompts]
    stats = server.stats()
    # 1% and 3% of 300; learning, the 60 that go before the first answer meet a second that takes 50.
    allowed = 3 if told else 9 + (60 - 50)
    assert stats["rate_limited"] <= allowed, stats


def test_learning_a_limit_the_first_requests_fit_sends_them_at_once(fake_server: Callable[..., FakeServer]) -> None:
    # 6,000 rpm is 100 a second: everything the first answer is waited for fits it, so nothing is refused.
    server = fake_server("--rpm", "6000", "--latency", "0.2")
    prompts = [f"blind start {i}" for i in range(400)]
    results = run(server, prompts, concurrency=100)
    assert all(r.ok for r in results)
    stats = server.stats()
    assert stats["max_in_flight"] == 100, stats  # no round trip spent waiting for a first answer
    assert stats["rate_limited"] <= 12, stats  # 3% of 400


@pytest.mark.slow
@pytest.mark.parametrize("told", [True, False], ids=["told-the-limit", "learning-from-headers"])
def test_tokens_per_minute(fake_server: Callable[..., FakeServer], told: bool) -> None:
    server = fake_server("--tpm", "150000", "--rpm", "100000")
    rng = random.Random(4)
    prompts = ["x" * rng.randint(40, 1000) + f" {i}" for i in range(200)]
    results = run(server, prompts, concurrency=50, **({"tpm": 150000, "rpm": 100000} if told else {}))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    stats = server.stats()
    if told:
        assert stats["rate_limited"] <= 2, stats  # 1% of 200
    else:
        # Learning, the 50 that go before the first answer meet a second that takes 2,500 tokens: those
        # that do not fit it are refused once, and teach the limit; after that, 3% of 200 at most.
        counted = [len(p) // 4 + 16 for p in prompts[:50]]
        fits = sum(1 for i in range(50) if sum(counted[: i + 1]) <= 150000 // 60)
        assert stats["rate_limited"] <= (50 - fits) + 6, stats


@pytest.mark.slow
def test_without_headers_429s_teach_the_rate(fake_server: Callable[..., FakeServer]) -> None:
    # A provider that announces nothing: only its 429s (with Retry-After) say where the limit is.
    server = fake_server("--rpm", "1200", "--latency", "0.02", "--no-limit-headers")
    prompts = [f"quiet {i}" for i in range(150)]
    results = run(server, prompts, concurrency=40)
    assert all(r.ok for r in results)
    assert server.stats()["rate_limited"] < 60


@pytest.mark.slow
def test_two_processes_on_one_limit_settle_under_it(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    # Two runs on one key: each learns the whole limit from the headers, and only the 429s say it is shared.
    # Given back to the pace, a refused request went again at once and was refused again; and climbing back
    # to the whole limit within a second made the two collide every second.
    server = fake_server("--rpm", "6000", "--latency", "0.2")
    runs = []
    for name in ("first", "second"):
        source = write_jsonl(tmp_path / f"{name}.jsonl", [{"id": i, "prompt": f"{name} {i}"} for i in range(500)])
        command = ["run", str(source), "-o", str(tmp_path / f"{name}.out.jsonl"), "-m", "openai/fake"]
        runs.append(start_cli(*command, "--api-base", server.url, "--concurrency", "100"))
    for process in runs:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    stats = server.stats()
    assert stats["answered"] == 1000
    # The first 100 of each go before any answer, into a second that takes 100 in all: those 100 are
    # refused whatever is done. After that, settling under the limit costs a few 429s a second. (Before,
    # most runs of this took about 1,700 429s, and some requests failed.)
    assert stats["rate_limited"] <= 100 + 0.2 * 1000, stats


def test_an_exhausted_quota_stops_the_run(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--quota", "5")
    with pytest.raises(llmgather.RunStopped) as stopped:
        run(server, [f"q{i}" for i in range(500)], concurrency=4)
    assert isinstance(stopped.value.cause, llmgather.QuotaExceededError)
    assert server.stats()["requests"] <= 5 + 4
