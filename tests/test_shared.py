"""`--shared`: many processes pacing one provider limit together through a real redis-server.

Each process is a real `llmgather run` against the fake provider (its own process); Redis is a real redis-server
on a free port, stopped and started again for the outage.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeServer, read_jsonl, reaped, run_cli, start_cli, write_jsonl
from redis_server import RedisServer, free_port

from llmgather.fake.common import expected_content

PROCESSES = 4
PER_PROCESS = 750
RUN_TIMEOUT_S = 240


def _inputs(tmp_path: Path, processes: int = PROCESSES, per_process: int = PER_PROCESS) -> list[Path]:
    return [
        write_jsonl(
            tmp_path / f"in{p}.jsonl", [{"id": f"p{p}-{i}", "prompt": f"question {p} {i}"} for i in range(per_process)]
        )
        for p in range(processes)
    ]


def _start_group(tmp_path: Path, server: FakeServer, *flags: str) -> list[subprocess.Popen[str]]:
    return [
        start_cli("run", str(path), "-o", str(tmp_path / f"out{p}.jsonl"), "-m", "openai/fake",
                  "--api-base", server.url, *flags)
        for p, path in enumerate(_inputs(tmp_path))
    ]  # fmt: skip


def _finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    done = []
    for process in processes:
        with reaped(process):
            _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        done.append((process.returncode, stderr))
    return done


def _every_prompt_right(tmp_path: Path) -> None:
    for p in range(PROCESSES):
        rows = read_jsonl(tmp_path / f"out{p}.jsonl")
        assert sorted(row["id"] for row in rows) == sorted(f"p{p}-{i}" for i in range(PER_PROCESS))
        for row in rows:
            assert row["error"] is None, row
            number = row["id"].split("-")[1]
            assert row["content"] == expected_content(f"question {p} {number}")


def _refused_share(stats: dict[str, Any]) -> float:
    return float(stats["rate_limited"]) / float(stats["requests"])


@pytest.mark.slow
def test_four_processes_told_the_limit_keep_under_it_together(
    tmp_path: Path, fake_server: Callable[..., FakeServer], redis_server: RedisServer
) -> None:
    server = fake_server("--rpm", "6000", "--latency", "0.2")
    done = _finish(_start_group(tmp_path, server, "--rpm", "6000", "--shared", redis_server.url))
    assert [code for code, _ in done] == [0] * PROCESSES, done
    _every_prompt_right(tmp_path)
    stats = server.stats()
    assert stats["answered"] == PROCESSES * PER_PROCESS
    assert _refused_share(stats) <= 0.01, stats
    # Together they used the limit: not four paces of a quarter each, nor four of the whole.
    assert stats["peak_requests_per_second"] >= 90, stats
    for _, stderr in done:
        assert "shared by 4 processes" in stderr, stderr[-2000:]


@pytest.mark.slow
def test_four_processes_learning_the_limit_share_what_they_learn(
    tmp_path: Path, fake_server: Callable[..., FakeServer], redis_server: RedisServer
) -> None:
    server = fake_server("--rpm", "6000", "--latency", "0.2")
    done = _finish(_start_group(tmp_path, server, "--shared", redis_server.url))
    assert [code for code, _ in done] == [0] * PROCESSES, done
    _every_prompt_right(tmp_path)
    stats = server.stats()
    assert _refused_share(stats) <= 0.03, stats
    assert stats["peak_requests_per_second"] >= 90, stats
    status = run_cli("shared", "status", redis_server.url)
    assert status.returncode == 0, status.stderr
    assert "openai/fake" in status.stdout and "6,000 rpm" in status.stdout, status.stdout


@pytest.mark.slow
def test_redis_lost_mid_run_loses_nothing_and_pacing_comes_back(
    tmp_path: Path, fake_server: Callable[..., FakeServer], redis_server: RedisServer
) -> None:
    server = fake_server("--rpm", "6000", "--latency", "0.2")
    processes = _start_group(tmp_path, server, "--rpm", "6000", "--shared", redis_server.url)
    give_up = time.monotonic() + 60
    while server.stats()["answered"] < 1000 and time.monotonic() < give_up:
        time.sleep(0.2)
    redis_server.stop()
    time.sleep(5)
    redis_server.start()
    done = _finish(processes)
    assert [code for code, _ in done] == [0] * PROCESSES, done
    _every_prompt_right(tmp_path)
    stats = server.stats()
    assert _refused_share(stats) <= 0.03, stats
    for _, stderr in done:
        assert stderr.count("stopped answering") == 1, stderr[-3000:]
        assert stderr.count("answers again: pacing together") == 1, stderr[-3000:]
        assert "Traceback" not in stderr


def test_a_run_whose_redis_does_not_answer_is_refused_before_anything(tmp_path: Path, server: FakeServer) -> None:
    (path,) = _inputs(tmp_path, processes=1, per_process=3)
    out = tmp_path / "out.jsonl"
    dead = f"redis://127.0.0.1:{free_port()}/0"
    refused = run_cli("run", str(path), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, "--shared", dead)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and dead in refused.stderr and "--shared-optional" in refused.stderr
    assert not out.exists()
    assert server.stats()["requests"] == 0

    alone = run_cli(
        "run", str(path), "-o", str(out), "-m", "openai/fake", "--api-base", server.url,
        "--shared", dead, "--shared-optional",
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    assert alone.stderr.count("stopped answering") == 1, alone.stderr
    assert len(read_jsonl(out)) == 3


@pytest.mark.parametrize(
    "flags",
    [
        ("--shared", "http://127.0.0.1:6379"),
        ("--shared", "redis://127.0.0.1:notaport/0"),
        ("--shared-optional",),
    ],
)
def test_bad_shared_flags_are_one_line_and_exit_2(tmp_path: Path, server: FakeServer, flags: tuple[str, ...]) -> None:
    (path,) = _inputs(tmp_path, processes=1, per_process=1)
    result = run_cli("run", str(path), "-o", str(tmp_path / "o.jsonl"), "-m", "openai/fake", "--api-base",
                     server.url, *flags)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--shared" in result.stderr


def test_shared_status_of_a_redis_that_does_not_answer_is_one_line() -> None:
    result = run_cli("shared", "status", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


def test_shared_status_of_an_empty_redis(redis_server: RedisServer) -> None:
    result = run_cli("shared", "status", redis_server.url)
    assert result.returncode == 0 and "no shared limits" in result.stdout, result


def test_the_python_api_shares_the_pace(server: FakeServer, redis_server: RedisServer) -> None:
    import llmgather

    results = llmgather.run(
        [f"q{i}" for i in range(20)], model="openai/fake", api_base=server.url, api_key="sk-x", rpm=6000,
        shared=redis_server.url,
    )  # fmt: skip
    assert [r.error for r in results] == [None] * 20
    status = run_cli("shared", "status", redis_server.url)
    assert "20 requests granted" in status.stdout, status.stdout


def test_a_provider_that_says_no_limit_is_not_waited_on(
    tmp_path: Path, fake_server: Callable[..., FakeServer], redis_server: RedisServer
) -> None:
    """No limit told and none in the headers (a local server): past the opening allowance nothing may wait for a
    limit nobody will learn, in this run or the next on the same quota."""
    server = fake_server("--no-limit-headers", "--latency", "0.05")
    (path,) = _inputs(tmp_path, processes=1, per_process=300)
    for run in range(2):
        out = tmp_path / f"out{run}.jsonl"
        result = run_cli("run", str(path), "-o", str(out), "-m", "openai/fake", "--api-base", server.url,
                         "--shared", redis_server.url)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert len(read_jsonl(out)) == 300


def test_two_accounts_on_one_endpoint_keep_two_quotas(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    (path,) = _inputs(tmp_path, processes=1, per_process=2)
    for number, key in enumerate(("sk-team-a", "sk-team-b")):
        result = run_cli("run", str(path), "-o", str(tmp_path / f"o{number}.jsonl"), "-m", "openai/fake",
                         "--api-base", server.url, "--api-key-env", "TEAM_KEY", "--rpm", "600",
                         "--shared", redis_server.url, env={"TEAM_KEY": key})  # fmt: skip
        assert result.returncode == 0, result.stderr
    status = run_cli("shared", "status", redis_server.url)
    assert status.stdout.startswith("2 shared limits"), status.stdout
    assert "sk-team" not in status.stdout
