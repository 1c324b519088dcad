"""Never lose a result, never pay twice: resume, the torn line, the cache, a graceful stop, budgets, secrets.

Every test runs `llmgather run` as a separate process against a fake-provider process, as a user would.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, reaped, run_cli, start_cli, write_jsonl

from llmgather.fake import expected_content, prompt_digest

KEY = "sk-test-not-a-real-key"


def run_against(server: FakeServer, source: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, *args)


def start_run(server: FakeServer, source: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    return start_cli("run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, *args)


def wait_for_lines(
    path: Path, at_least: int, timeout_s: float = 30.0, writer: subprocess.Popen[str] | None = None
) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ended = writer is not None and writer.poll() is not None  # before counting: then the count is final
        lines = path.read_bytes().count(b"\n") if path.exists() else 0
        if lines >= at_least:
            return lines
        if writer is not None and ended:
            _, stderr = writer.communicate()
            raise AssertionError(f"the run ended ({writer.returncode}) short of {at_least} lines: {stderr}")
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {at_least} lines in {timeout_s} s")


def prompts(n: int, prefix: str = "durable") -> list[dict[str, object]]:
    return [{"id": i, "prompt": f"{prefix} {i}", "temperature": 0} for i in range(n)]


def assert_each_id_once_and_right(out: Path, records: list[dict[str, object]]) -> None:
    rows = read_jsonl(out)
    assert Counter(row["id"] for row in rows) == Counter(r["id"] for r in records)
    by_id = {row["id"]: row for row in rows}
    for record in records:
        assert by_id[record["id"]]["content"] == expected_content(str(record["prompt"])), by_id[record["id"]]


def test_a_torn_last_line_is_cut_off_on_resume_and_its_request_sent(server: FakeServer, tmp_path: Path) -> None:
    records = prompts(5)
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert run_against(server, source, out, "--max-requests", "3").returncode == 3
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"id": 3, "model": "openai/fake", "content": "half a li')  # died mid-write
    done = run_against(server, source, out, "--resume")
    assert done.returncode == 0, done.stderr
    assert "torn last line" in done.stderr
    assert_each_id_once_and_right(out, records)
    assert server.stats()["requests"] == 5  # three, then the two never answered: nothing twice


def test_an_output_that_holds_results_is_never_clobbered(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3))
    out = tmp_path / "out.jsonl"
    assert run_against(server, source, out).returncode == 0
    before = out.read_bytes()
    again = run_against(server, source, out)
    assert again.returncode == 2
    assert "--resume" in again.stderr and "--overwrite" in again.stderr
    assert out.read_bytes() == before
    assert server.stats()["requests"] == 3


def test_resume_leaves_failures_alone_unless_asked_to_retry_them(server: FakeServer, tmp_path: Path) -> None:
    records = [
        {"id": i, "prompt": f"retry me {i}" + (" [[fake status=400 times=1]]" if i % 3 == 0 else "")} for i in range(9)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert run_against(server, source, out).returncode == 1
    assert sum(row["error"] is not None for row in read_jsonl(out)) == 3

    kept = run_against(server, source, out, "--resume")
    assert kept.returncode == 0 and server.stats()["requests"] == 9  # nothing left to send
    assert "--retry-failed" in kept.stderr

    retried = run_against(server, source, out, "--resume", "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert server.stats()["requests"] == 12  # only the three failures, once each
    assert_each_id_once_and_right(out, records)  # the failures superseded, not duplicated
    assert all(row["error"] is None for row in read_jsonl(out))


def test_a_cache_hit_sends_nothing_and_says_cached(server: FakeServer, tmp_path: Path) -> None:
    records = [*prompts(20, "cached"), {"id": "warm", "prompt": "sampled", "temperature": 0.7}]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    cache = tmp_path / "cache.sqlite"
    first = run_against(server, source, tmp_path / "1.jsonl", "--cache", str(cache))
    assert first.returncode == 0 and server.stats()["requests"] == 21
    second = run_against(server, source, tmp_path / "2.jsonl", "--cache", str(cache))
    assert second.returncode == 0, second.stderr
    assert server.stats()["requests"] == 21  # every request is cached, the sampled one too
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "2.jsonl")}
    assert all(rows[i]["cached"] is True and rows[i]["cost_usd"] == 0 for i in [*range(20), "warm"])
    assert_each_id_once_and_right(tmp_path / "2.jsonl", records)
    assert "21 answers from the cache" in second.stderr

    # Restricted to deterministic requests, a cache stores the temperature 0 ones only.
    only = ("--cache", str(tmp_path / "deterministic.sqlite"), "--cache-deterministic-only")
    third = run_against(server, source, tmp_path / "3.jsonl", *only)
    assert third.returncode == 0 and server.stats()["requests"] == 42
    fourth = run_against(server, source, tmp_path / "4.jsonl", *only)
    assert fourth.returncode == 0 and server.stats()["requests"] == 43  # the sampled one, sent again
    assert "20 answers from the cache" in fourth.stderr and "1 not cached" in fourth.stderr

    stats = run_cli("cache", "stats", str(cache))
    assert stats.returncode == 0 and "21 answers" in stats.stdout
    cleared = run_cli("cache", "clear", str(cache))
    assert cleared.returncode == 0 and "removed 21" in cleared.stdout
    assert "0 answers" in run_cli("cache", "stats", str(cache)).stdout


def test_two_processes_share_one_cache(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--latency", "0.01", "--log", str(log))
    records = prompts(300, "shared")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    cache = tmp_path / "cache.sqlite"
    runs = [start_run(server, source, tmp_path / f"{n}.jsonl", "--cache", str(cache), "--quiet") for n in range(2)]
    for process in runs:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    for n in range(2):
        assert_each_id_once_and_right(tmp_path / f"{n}.jsonl", records)
    sent = server.stats()["requests"]
    # Each of the 600 results was either sent or taken from the cache, never both; no prompt went to the
    # provider more than once a process, and the log holds each request the fake answered.
    from_cache = sum(row["cached"] for n in range(2) for row in read_jsonl(tmp_path / f"{n}.jsonl"))
    assert sent + from_cache == 600, (sent, from_cache)
    answered = Counter(json.loads(line)["prompt"] for line in log.read_text().splitlines())
    assert set(answered) == {prompt_digest(str(r["prompt"])) for r in records}
    assert max(answered.values()) <= 2 and sum(answered.values()) == sent
    third = run_against(server, source, tmp_path / "3.jsonl", "--cache", str(cache))
    assert third.returncode == 0 and server.stats()["requests"] == sent  # both runs' answers are there
    assert sqlite3.connect(cache).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.slow
def test_sigint_finishes_what_is_in_flight_and_prints_the_resume_command(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--latency", "0.3")
    records = prompts(200, "interrupted")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    process = start_run(server, source, out, "--concurrency", "10")
    wait_for_lines(out, 20)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "stopping: letting" in stderr
    rows = read_jsonl(out)  # every line whole
    stats = server.stats()
    assert stats["in_flight"] == 0 and len(rows) == stats["answered"]  # what was in flight finished and is written
    assert len(rows) < 200
    command = stderr.split("to finish, run:\n", 1)[1].strip().splitlines()[0]
    assert command.startswith("llmgather run ") and command.endswith("--resume")

    resumed = run_cli(*command.split()[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)
    assert server.stats()["answered"] == 200


def test_sigint_does_not_wait_out_the_backoffs_of_requests_not_in_flight(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server()
    # Each first attempt gets a 503 asking for 100 s: every request then waits, none is in flight.
    records = [{"id": i, "prompt": f"[[fake status=503 times=1 retry_after=100]] backing off {i}"} for i in range(20)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    process = start_run(server, source, out, "--grace", "120")
    deadline = time.monotonic() + 20
    while server.stats()["requests"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    # Waiting out the 100 s backoffs (the grace allows 120) would overrun communicate()'s 30 s.
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "letting 0 requests in flight finish" in stderr and out.read_bytes() == b""
    resumed = run_against(server, source, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)


def test_a_second_sigint_stops_at_once_and_tears_nothing(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--latency", "60")
    source = write_jsonl(tmp_path / "in.jsonl", prompts(40, "impatient"))
    out = tmp_path / "out.jsonl"
    process = start_run(server, source, out, "--concurrency", "10", "--grace", "120")
    deadline = time.monotonic() + 20
    while server.stats()["in_flight"] < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    # Waiting out the answers (60 s) or the grace (120 s) would overrun communicate()'s 30 s.
    assert out.read_bytes() == b""  # nothing answered, nothing half-written
    assert "--resume" in stderr
    assert "letting 10 requests in flight finish" in stderr and "10 requests in flight cut off" in stderr


def test_a_bad_key_stops_after_a_few_requests_naming_model_and_endpoint(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--api-key", "sk-the-right-one")
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2000, "denied"))
    done = run_against(server, source, tmp_path / "out.jsonl", "--concurrency", "8")
    assert done.returncode == 3
    assert "AuthenticationError" in done.stderr and "openai/fake" in done.stderr and server.url in done.stderr
    assert server.stats()["requests"] <= 8
    assert read_jsonl(tmp_path / "out.jsonl") == []


def test_an_exhausted_quota_stops_after_a_few_requests(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    server = fake_server("--quota", "30")
    records = prompts(2000, "quota")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    done = run_against(server, source, out, "--concurrency", "8")
    assert done.returncode == 3 and "QuotaExceededError" in done.stderr
    assert server.stats()["requests"] <= 30 + 8
    assert len(read_jsonl(out)) == 30 and "--resume" in done.stderr


def test_an_outage_costs_a_few_probes_not_every_retry(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--latency", "0.02", "--outage", "0.3,3", "--log", str(log))
    records = prompts(600, "outage")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    done = run_against(server, source, out, "--concurrency", "20", "--max-retries", "8")
    assert done.returncode == 0, done.stderr
    assert_each_id_once_and_right(out, records)
    refused = server.stats()["by_status"].get("503", 0)
    # Without the breaker, 20 requests in flight would each retry through the 3 s: well over 100 refusals.
    assert 0 < refused <= 20 + 20 + 8, refused
    assert "outage paused sending" in done.stderr


def test_budgets_stop_the_run_resumably(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    server = fake_server()
    records = prompts(200, "budget")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    by_count = run_against(server, source, out, "--max-requests", "50")
    assert by_count.returncode == 3 and "budget of 50 requests" in by_count.stderr
    assert server.stats()["requests"] == 50 and len(read_jsonl(out)) == 50

    # gpt-4o-mini is in the bundled price table: 16 completion tokens each cost about $0.00001.
    priced = ["run", str(source), "-o", str(tmp_path / "cost.jsonl"), "-m", "openai/gpt-4o-mini"]
    by_cost = run_cli(*priced, "--api-base", server.url, "--max-cost", "0.0001", "--concurrency", "4")
    assert by_cost.returncode == 3 and "budget of $0.0001" in by_cost.stderr
    costs = [row["cost_usd"] for row in read_jsonl(tmp_path / "cost.jsonl")]
    # Each request in flight holds its estimated cost, so the run stops short of the limit rather than
    # going over by what was in flight; it stops only when the next request would not fit.
    assert 0.0001 - 2 * max(costs) < sum(costs) <= 0.0001

    finished = run_against(server, source, out, "--resume")
    assert finished.returncode == 0
    assert_each_id_once_and_right(out, records)


def test_a_cost_budget_for_a_model_of_unknown_price_is_refused_before_sending(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server()
    source = write_jsonl(tmp_path / "in.jsonl", prompts(5, "unpriced"))
    out = tmp_path / "out.jsonl"
    refused = run_against(server, source, out, "--max-cost", "1")
    assert refused.returncode == 2 and "--price openai/fake=" in refused.stderr
    assert server.stats()["requests"] == 0 and not out.exists()
    priced = run_against(server, source, out, "--max-cost", "1", "--price", "openai/fake=1,2")
    assert priced.returncode == 0, priced.stderr


def test_the_key_appears_in_no_file_the_run_wrote(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    server = fake_server("--api-key", KEY)
    records = [*prompts(30, "secret"), {"id": "bad", "prompt": "[[fake status=400 times=9]]"}]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    keyed = ("--cache", str(cache), "--api-key-env", "OPENAI_API_KEY")  # a key goes to another endpoint if named
    done = run_against(server, source, out, *keyed)
    assert done.returncode == 1, done.stderr
    again = run_against(server, source, out, "--resume", "--retry-failed", *keyed)
    wrong_key = "sk-wrong-but-still-secret-0123456789"
    denied = ["run", str(source), "-o", str(tmp_path / "denied.jsonl"), "-m", "openai/fake", "--api-base", server.url]
    wrong = run_cli(*denied, "--api-key-env", "OTHER_KEY", env={"OTHER_KEY": wrong_key})
    assert wrong.returncode == 3 and "AuthenticationError" in wrong.stderr
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    written = [p for p in tmp_path.iterdir() if p.name != "in.jsonl"]
    assert {out, cache, tmp_path / "denied.jsonl"} <= set(written)
    for path in written:
        content = path.read_bytes()
        assert KEY.encode() not in content and wrong_key.encode() not in content, path
    for output in (done, again, wrong):
        assert KEY not in output.stdout + output.stderr and wrong_key not in output.stdout + output.stderr


@pytest.mark.slow
def test_killed_at_random_points_resumed_each_time_nothing_lost_nothing_sent_twice(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--latency", "0.05", "--jitter", "0.05", "--log", str(log))
    records = prompts(2000, "crash")
    digest_of = {r["id"]: prompt_digest(str(r["prompt"])) for r in records}
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    for n in range(4):
        written_before = _ids_written(out)
        log_offset = log.stat().st_size if log.exists() else 0
        process = start_run(server, source, out, "--concurrency", "40", "--quiet", *(["--resume"] if n else []))
        # Killed after it has added 100 to 300 lines, up to 0.15 s later: wherever the run then is.
        _kill_when(out, len(written_before) + rng.randrange(100, 300), process, after_s=rng.uniform(0, 0.15))
        written_after = _ids_written(out)
        # The kill landed mid-run: this run had added to the output, and had not finished it.
        assert written_before < written_after and len(written_after) < len(records), f"seed {seed}"
        # Paid for and lost: answered, but not in the output. Only what was in flight can be (at most 40).
        lost = _answered(log, log_offset) - {digest_of[i] for i in written_after}
        assert len(lost) <= 40, f"seed {seed}: {len(lost)} answers lost at a kill, more than were in flight"
        _assert_not_sent_again(log, log_offset, {digest_of[i] for i in written_before})
    written_before = _ids_written(out)
    log_offset = log.stat().st_size
    final = start_run(server, source, out, "--concurrency", "40", "--quiet", "--resume")
    _, stderr = final.communicate(timeout=60)
    assert final.returncode == 0, stderr
    _assert_not_sent_again(log, log_offset, {digest_of[i] for i in written_before})
    assert_each_id_once_and_right(out, records)
    assert _answered(log, 0) == set(digest_of.values())


def _answered(log: Path, offset: int) -> set[str]:
    """The prompts the fake answered, from `offset` in its log on."""
    with log.open("rb") as file:
        file.seek(offset)
        return {entry["prompt"] for entry in map(json.loads, file) if entry["outcome"] == 200}


def _kill_when(out: Path, at_least: int, process: subprocess.Popen[str], after_s: float) -> None:
    # A timer thread, not a sleep: the kill lands wherever the run happens to be, mid-write included.
    with reaped(process):
        wait_for_lines(out, at_least, timeout_s=60, writer=process)
        threading.Timer(after_s, process.kill).start()
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


def _ids_written(out: Path) -> set[object]:
    if not out.exists():
        return set()
    ids = set()
    for line in out.read_bytes().splitlines(keepends=True):
        if line.endswith(b"\n"):
            ids.add(json.loads(line)["id"])
    return ids


def _assert_not_sent_again(log: Path, offset: int, already_written: set[str]) -> None:
    with log.open("rb") as file:
        file.seek(offset)
        sent = {json.loads(line)["prompt"] for line in file if line.strip()}
    assert not (sent & already_written), f"{len(sent & already_written)} prompts already in the output were sent again"


@pytest.mark.parametrize("flag", ["--resume"])
def test_resume_needs_an_output_file(server: FakeServer, tmp_path: Path, flag: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(1))
    done = run_cli("run", str(source), "-m", "openai/fake", "--api-base", server.url, flag)
    assert done.returncode == 2 and "-o" in done.stderr


def test_a_budget_stops_streamed_answers_that_report_no_usage(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # A stream without stream_options.include_usage says nothing of its tokens, though it was paid for: the
    # budget is charged its estimate. Before, all 200 were sent and the summary said 0 tokens.
    server = fake_server()
    records = [{**record, "stream": True} for record in prompts(200, "streamed")]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    done = run_cli(
        *("run", str(source), "-o", str(tmp_path / "out.jsonl"), "-m", "openai/gpt-4o-mini"),
        *("--api-base", server.url, "--max-cost", "0.0001", "--concurrency", "4"),
    )
    assert done.returncode == 3 and "budget of $0.0001" in done.stderr
    assert server.stats()["requests"] < 50
