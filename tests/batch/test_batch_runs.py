"""`llmgather run --batch` end to end: the command line against the fake provider process, as a user runs it.

Half price, every id once and right, crashes (SIGKILL during submission and polling, resumed each time) that
neither lose a result nor pay for one twice, `--by` spilling to online, `--detach` then `--resume`, and
`llmgather batches OUT [--cancel]`. What was paid for is read from the fake's log: each batch created (its
custom ids, prompts and tags), cancelled and ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import FakeServer, read_jsonl, reaped, run_cli, start_cli, write_jsonl
from test_durability import assert_each_id_once_and_right, prompts

from llmgather.batch.journal import Journal
from llmgather.fake import prompt_digest

ANTHROPIC_KEY = "sk-ant-api03-fake-key-for-the-batch-tests-0123456789"
PRICE = ("--price", "openai/fake=1,2", "--price", "anthropic/fake=1,2")
"""$1 and $2 a million prompt and completion tokens online; a batch bills half."""


def base_of(server: FakeServer, model: str) -> str:
    """Anthropic's base is the server's root; OpenAI's ends in /v1."""
    return server.url.removesuffix("/v1") if model.startswith("anthropic/") else server.url


def run_args(server: FakeServer, source: Path, out: Path, model: str, *args: str) -> list[str]:
    key = ("--api-key-env", "ANTHROPIC_API_KEY") if model.startswith("anthropic/") else ()
    return ["run", str(source), "-o", str(out), "-m", model, "--api-base", base_of(server, model), *key, *args]


def batch_run(
    server: FakeServer, source: Path, out: Path, *args: str, model: str = "openai/fake"
) -> subprocess.CompletedProcess[str]:
    """`llmgather run --batch` to the fake, to its end."""
    return run_cli(*run_args(server, source, out, model, "--batch", *args), env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY})


def log_events(log: Path, event: str) -> list[dict[str, Any]]:
    return [entry for entry in map(json.loads, log.read_text().splitlines()) if entry.get("event") == event]


def online_price(usage: dict[str, int]) -> float:
    return (usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2) / 1e6


def assert_half_price(out: Path) -> None:
    for row in read_jsonl(out):
        assert row["cost_usd"] == pytest.approx(online_price(row["usage"]) / 2, rel=1e-6), row


# -- 1. a whole run --------------------------------------------------------------------------------


def test_a_batch_run_answers_every_id_once_at_half_price(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server(
        *("--batch-seconds", "2", "--batch-error-rate", "0.02", "--batch-max-requests", "400", "--log", str(log))
    )
    records = prompts(2000, "batched")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    done = batch_run(server, source, out, "--batch-size", "400", *PRICE)
    assert done.returncode == 0, done.stderr
    assert_each_id_once_and_right(out, records)
    rows = read_jsonl(out)
    assert all(row["lane"] == "batch" and row["error"] is None for row in rows)
    assert_half_price(out)
    stats = server.stats()
    created = log_events(log, "batch_created")
    assert {row["batch_id"] for row in rows} <= {entry["batch"] for entry in created}
    assert stats["requests"] == 0  # nothing online
    assert stats["answered"] == 2000 and stats["answered_twice"] == 0
    # 2000 in five parts of 400, then the ~2% transient errors again in smaller ones.
    assert sum(len(entry["custom_ids"]) == 400 for entry in created) == 5
    retried = sum(row["attempts"] > 1 for row in rows)
    assert 0 < retried < 200 and sum(len(e["custom_ids"]) for e in created) >= 2000 + retried
    batch_line = re.search(r"batches +(\d+) submitted this run; (\d+) results through batches", done.stderr)
    assert batch_line is not None, done.stderr
    assert int(batch_line[1]) == len(created) and int(batch_line[2]) == 2000
    assert "0 sent online after --by" in done.stderr
    assert re.search(r"saved +\$[0-9.]+: \$[0-9.]+ against \$[0-9.]+ all online \(0\.50x\)", done.stderr), done.stderr


# -- 2, 3. killed and resumed --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model", ["openai/fake", "anthropic/fake"])
def test_killed_in_submission_and_polling_resumed_each_time_nothing_lost_nothing_paid_twice(
    fake_server: Callable[..., FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    # Issue 11's crash test: 5,000 prompts, a 1,000-request batch limit (five batches at least), 2% transient
    # errors, 3 s batches; killed with SIGKILL during submission and during polling, resumed each time.
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    log = tmp_path / "provider.log"
    server = fake_server(
        *("--batch-seconds", "3", "--batch-error-rate", "0.02", "--batch-max-requests", "1000", "--log", str(log))
    )
    records = prompts(5000, "crash")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.batches.jsonl"
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    # Three kills where each lands for sure (a part being submitted in the first run; polling, before the
    # first batches end; results being read and written), then one anywhere the run then is.
    phases = ["submission", "polling", "collecting", rng.choice(["submission", "polling", "collecting"])]
    kills = 0
    for n, phase in enumerate(phases):
        args = run_args(server, source, out, model, "--batch", "--batch-size", "1000", "--quiet", *PRICE)
        process = start_cli(*args, *(["--resume"] if n else []))
        with reaped(process):
            came = True
            if phase == "submission":
                came = _wait_to_grow(journal, b'"intent"', process)
                after_s = rng.uniform(0, 0.04)
            elif phase == "polling":
                after_s = rng.uniform(1.0, 2.5)
            else:
                came = _wait_to_grow(out, b"\n", process)
                after_s = rng.uniform(0, 0.03)
            assert came or n >= 3, f"seed {seed}, kill {n} ({phase}): the run ended first ({process.returncode})"
            threading.Timer(after_s, _kill, [process]).start()
            process.wait(timeout=60)
        if process.returncode == 0 and n >= 3:
            break  # the last, random kill came after the end: three have landed
        assert process.returncode == -signal.SIGKILL, f"seed {seed}, kill {n} ({phase}): {process.returncode}"
        kills += 1
    assert kills >= 3
    final = run_cli(*args, "--resume", env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    assert final.returncode == 0, f"seed {seed}: {final.stderr}"
    assert_each_id_once_and_right(out, records)
    assert_half_price(out)
    assert all(row["lane"] == "batch" and row["batch_id"] for row in read_jsonl(out))
    stats = server.stats()  # settles every batch: each one's end is in the log
    assert stats["answered"] == 5000 and stats["answered_twice"] == 0, f"seed {seed}"
    assert_never_two_live_batches_for_one_prompt(log, {prompt_digest(str(r["prompt"])) for r in records}, seed)
    assert not Journal.peek(journal).live_parts()  # type: ignore[union-attr]


def _count(path: Path, needle: bytes) -> int:
    return path.read_bytes().count(needle) if path.exists() else 0


def _wait_to_grow(path: Path, needle: bytes, process: subprocess.Popen[str], timeout_s: float = 60.0) -> bool:
    """Until `path` holds one more `needle` than now (a part intended, a result written); False if the run
    ended first."""
    before = _count(path, needle)
    deadline = time.monotonic() + timeout_s
    while _count(path, needle) <= before:
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the moment to kill the run never came"
        time.sleep(0.002)
    return True


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()


def assert_never_two_live_batches_for_one_prompt(
    log: Path, ours: set[str], seed: int, journal: Path | None = None
) -> None:
    """From the fake's log: no part was created twice, and no prompt was in two batches live at the same time
    (for one model: with `journal`, each batch's model is read from it)."""
    model_of: dict[str, str] = {}
    if journal is not None:
        entries = read_jsonl(journal)
        part_model = {entry["part"]: entry["model"] for entry in entries if "intent" in entry}
        model_of = {entry["batch"]: part_model[entry["part"]] for entry in entries if "batch" in entry}
    created = log_events(log, "batch_created")
    ended = {entry["batch"]: entry["t"] for entry in log_events(log, "batch_ended")}
    parts = Counter(
        {cid.rpartition("-")[0] for cid in entry["custom_ids"]}.pop() for entry in created if entry["custom_ids"]
    )
    assert all(n == 1 for n in parts.values()), f"seed {seed}: parts created twice: {parts.most_common(3)}"
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for entry in created:
        for digest in entry["prompts"]:
            key = (model_of.get(entry["batch"], ""), digest)
            spans.setdefault(key, []).append((entry["t"], ended[entry["batch"]]))
    assert {digest for _, digest in spans} == ours
    for digest, lives in spans.items():
        lives.sort()
        for (_, end), (start, _) in itertools.pairwise(lives):
            assert end <= start, f"seed {seed}: prompt {digest} in two live batches ({lives})"


# -- 4. a deadline ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_by_cancels_the_late_batches_and_sends_the_rest_online_answering_each_once(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    # OpenAI validates for the first 10% of a batch's time (6 s), so by 10 s about a tenth is answered.
    server = fake_server("--batch-seconds", "60", "--log", str(log))
    records = prompts(300, "deadline")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    done = batch_run(server, source, out, "--by", "10s", "--batch-size", "100", *PRICE)
    assert done.returncode == 0, done.stderr
    assert_each_id_once_and_right(out, records)
    rows = read_jsonl(out)
    lanes = Counter(row["lane"] for row in rows)
    assert lanes["batch"] > 0 and lanes["online"] > 0 and lanes["batch"] + lanes["online"] == 300, lanes
    for row in rows:
        share = 0.5 if row["lane"] == "batch" else 1.0
        assert row["cost_usd"] == pytest.approx(online_price(row["usage"]) * share, rel=1e-6), row
        assert (row.get("batch_id") is not None) == (row["lane"] == "batch"), row
    stats = server.stats()
    assert stats["answered"] == 300 and stats["answered_twice"] == 0  # nothing paid twice
    assert stats["requests"] == lanes["online"]
    cancelled = {entry["batch"] for entry in log_events(log, "batch_cancel")}
    assert cancelled == {entry["batch"] for entry in log_events(log, "batch_created")} and len(cancelled) == 3
    split = re.search(
        r"(\d+) results through batches \(\$([0-9.]+)\), (\d+) sent online after --by \(\$([0-9.]+)\)", done.stderr
    )
    assert split is not None, done.stderr
    assert (int(split[1]), int(split[3])) == (lanes["batch"], lanes["online"])
    batch_cost = sum(row["cost_usd"] for row in rows if row["lane"] == "batch")
    online_cost = sum(row["cost_usd"] for row in rows if row["lane"] == "online")
    assert (float(split[2]), float(split[4])) == (round(batch_cost, 4), round(online_cost, 4))
    all_online = sum(online_price(row["usage"]) for row in rows)
    saved = re.search(r"saved +\$([0-9.]+): \$([0-9.]+) against \$([0-9.]+) all online", done.stderr)
    assert saved is not None, done.stderr
    assert float(saved[3]) == round(all_online, 4) and float(saved[2]) == round(batch_cost + online_cost, 4)


@pytest.mark.slow
def test_by_sends_online_what_it_cancelled_even_with_no_retries_left(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # A request its batch did not answer because --by cancelled it has not failed: it goes online, whatever
    # --max-retries allows batches (the online lane has its own tries).
    server = fake_server("--batch-seconds", "20")
    records = prompts(100, "cancelled")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    done = batch_run(server, source, out, "--by", "3s", "--max-retries", "0")
    assert done.returncode == 0, done.stderr
    assert_each_id_once_and_right(out, records)
    lanes = Counter(row["lane"] for row in read_jsonl(out))
    assert lanes["online"] > 0 and lanes["batch"] + lanes["online"] == 100, lanes
    assert "0 retries" in done.stderr  # sent online at the deadline, not tried again
    assert server.stats()["answered_twice"] == 0


# -- 5. detached ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_detach_submits_and_exits_then_resume_collects_everything(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "6", "--batch-error-rate", "0.02", "--log", str(log))
    records = prompts(500, "detached")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    detached = batch_run(server, source, out, "--batch-size", "200", "--detach")
    assert detached.returncode == 0, detached.stderr
    assert read_jsonl(out) == [] if out.exists() else True
    batches = server.stats()["batches"]
    # It did not wait for them: all three are still running at the provider.
    assert batches["created"] == 3 and batches["requests"] == 500 and "completed" not in batches["by_state"]
    command = detached.stderr.split("To collect the rest, run:\n", 1)[1].strip().splitlines()[0]
    assert command.startswith("llmgather run ") and command.endswith("--resume") and "--detach" not in command

    resumed = run_cli(*command.split()[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)
    assert all(row["lane"] == "batch" for row in read_jsonl(out))
    stats = server.stats()
    assert stats["answered"] == 500 and stats["answered_twice"] == 0
    created = log_events(log, "batch_created")
    assert len({entry["batch"] for entry in created}) == len(created)
    assert sum(len(entry["custom_ids"]) for entry in created[:3]) == 500  # the resume created only retries


# -- 6. listing and cancelling ---------------------------------------------------------------------------


def test_batches_lists_the_parts_and_cancel_cancels_the_live_ones(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "60", "--log", str(log))
    records = prompts(250, "listed")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert batch_run(server, source, out, "--batch-size", "100", "--detach").returncode == 0
    ids = [entry["batch"] for entry in log_events(log, "batch_created")]
    assert len(ids) == 3

    listed = run_cli("batches", str(out))
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert len(rows) == 3
    for number, (row, batch_id) in enumerate(zip(rows, ids, strict=True), start=1):
        fields = row.split()
        assert fields[:3] == [str(number), "openai/fake", batch_id], row
        assert fields[3] in ("validating", "in_progress"), row
    assert [row.split()[-2].split("/")[1] for row in rows] == ["100", "100", "50"]

    cancelled = run_cli("batches", str(out), "--cancel")
    assert cancelled.returncode == 0, cancelled.stderr
    assert {entry["batch"] for entry in log_events(log, "batch_cancel")} == set(ids)
    assert all(row.split()[3] in ("finalizing", "ended") for row in cancelled.stdout.splitlines()[1:]), cancelled.stdout
    # What a resume then does: collect the cancelled batches and send what they did not answer again.
    assert server.stats()["answered"] == 0


# -- a creation whose answer was lost -----------------------------------------------------------------------


@contextlib.contextmanager
def failing_gateway(target: str, fails: Callable[[web.Request], bool], status: int = 502) -> Iterator[str]:
    """A gateway in front of `target` that passes every call on, but answers those `fails` picks with `status`
    after the provider has acted on them (a batch made whose id never came back). Yields its root URL."""
    ready: list[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        async with aiohttp.ClientSession() as session:

            async def forward(request: web.Request) -> web.Response:
                headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
                body = await request.read()
                url = target + request.path_qs
                async with session.request(request.method, url, headers=headers, data=body) as answer:
                    data = await answer.read()
                    if fails(request):
                        return web.json_response({"error": {"message": "refused by the gateway"}}, status=status)
                    return web.Response(status=answer.status, body=data, content_type=answer.content_type)

            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", forward)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            stop = asyncio.Event()
            ready.append((f"http://127.0.0.1:{runner.addresses[0][1]}", asyncio.get_running_loop(), stop))
            await stop.wait()
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not ready and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert ready, "the proxy did not start"
        yield ready[0][0]
    finally:
        if ready:
            _, loop, stop = ready[0]
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("model", "lose"), [("openai/fake", "/v1/batches"), ("anthropic/fake", "/v1/messages/batches")]
)
def test_a_batch_created_though_its_creation_answered_an_error_is_taken_not_created_again(
    fake_server: Callable[..., FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, lose: str
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "1", "--log", str(log))
    records = prompts(250, "lost")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    lost: list[str] = []

    def first_create(request: web.Request) -> bool:
        if request.method == "POST" and request.path == lose and not lost:
            lost.append(request.path)
            return True
        return False

    with failing_gateway(server.url.removesuffix("/v1"), first_create) as root:
        base = root if model.startswith("anthropic/") else root + "/v1"
        key = ("--api-key-env", "ANTHROPIC_API_KEY") if model.startswith("anthropic/") else ()
        args = ("run", str(source), "-o", str(out), "-m", model, "--api-base", base, *key)
        done = run_cli(*args, "--batch", "--batch-size", "100", *PRICE, env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    assert done.returncode == 0, done.stderr
    assert_each_id_once_and_right(out, records)
    stats = server.stats()
    assert stats["answered"] == 250 and stats["answered_twice"] == 0
    # The first part's batch was made though its id never came back: it is found and taken, not made again.
    created = log_events(log, "batch_created")
    assert len(created) == 3, [entry["custom_ids"][0] for entry in created]
    assert_never_two_live_batches_for_one_prompt(log, {prompt_digest(str(r["prompt"])) for r in records}, 0)


# -- the deadline is the run's, not each process's ------------------------------------------------------------


def test_a_resumed_run_keeps_the_deadline_of_the_run_it_resumes(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "20", "--log", str(log))
    records = prompts(200, "late")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert batch_run(server, source, out, "--by", "30m", "--detach").returncode == 0
    # As if the run had begun an hour ago (and crashed, or was detached): its 30 minutes are long past.
    journal = tmp_path / "out.jsonl.batches.jsonl"
    first, rest = journal.read_text().split("\n", 1)
    started = json.loads(first) | {"started": json.loads(first)["started"] - 3600}
    journal.write_text(json.dumps(started) + "\n" + rest)
    process = start_cli(*run_args(server, source, out, "openai/fake", "--batch", "--by", "30m", "--resume"))
    with reaped(process):
        _, stderr = process.communicate(timeout=60)  # a fresh 30 minutes would not end before this
    assert process.returncode == 0, stderr
    assert_each_id_once_and_right(out, records)
    # Cancelled at once, and what the batches had not answered (most: they were barely begun) sent online.
    assert {entry["batch"] for entry in log_events(log, "batch_cancel")} == {
        entry["batch"] for entry in log_events(log, "batch_created")
    }
    lanes = Counter(row["lane"] for row in read_jsonl(out))
    assert lanes["online"] > 100 and lanes["online"] + lanes["batch"] == 200, lanes
    assert server.stats()["answered_twice"] == 0


# -- failures sent again ------------------------------------------------------------------------------------


def test_resume_with_retry_failed_sends_the_failed_requests_in_a_new_batch(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "1", "--log", str(log))
    records = [{"id": i, "prompt": f"refused {i}" + (" [[batch_permanent]]" if i < 3 else "")} for i in range(20)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    first = batch_run(server, source, out)
    assert first.returncode == 1, first.stderr
    assert sum(row["error"] is not None for row in read_jsonl(out)) == 3
    again = batch_run(server, source, out, "--resume", "--retry-failed")
    assert again.returncode == 1, again.stderr  # the fake refuses them every time
    created = log_events(log, "batch_created")
    assert len(created) == 2, "the failures were read again from the old batch, not sent"
    assert sorted(created[1]["prompts"]) == sorted(prompt_digest(str(r["prompt"])) for r in records[:3])
    rows = read_jsonl(out)
    assert Counter(row["id"] for row in rows) == Counter(range(20))  # each failure superseded, not duplicated
    assert {row["id"] for row in rows if row["error"] is not None} == {0, 1, 2}


@pytest.mark.slow
def test_a_line_that_failed_validation_is_sent_again_by_retry_failed_and_fails_alone(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "1", "--log", str(log))
    records = [{"id": i, "prompt": f"checked {i}" + (" [[batch_invalid]]" if i == 5 else "")} for i in range(30)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    first = batch_run(server, source, out)
    assert first.returncode == 1, first.stderr
    failed = [row for row in read_jsonl(out) if row["error"] is not None]
    assert [row["id"] for row in failed] == [5] and "failed validation" in failed[0]["error"]["message"]
    assert "in.jsonl:6" in failed[0]["error"]["message"]  # the input line that caused it
    # The batch that failed whole is never read again for its requests: the one line goes in a batch of its own.
    again = batch_run(server, source, out, "--resume", "--retry-failed")
    assert again.returncode == 1, again.stderr
    assert "internal error" not in again.stderr
    assert len(log_events(log, "batch_created")) == 3
    journal = read_jsonl(tmp_path / "out.jsonl.batches.jsonl")
    assert [entry["ids"] for entry in journal if "intent" in entry] == [
        list(range(30)),
        [*range(5), *range(6, 30)],
        [5],
    ]
    rows = read_jsonl(out)
    assert Counter(row["id"] for row in rows) == Counter(range(30))
    assert [row["id"] for row in rows if row["error"] is not None] == [5]


def test_a_cost_budget_lets_each_batch_go_once_the_last_has_settled(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # Each request is held at its estimate (hundreds of completion tokens, before any is seen) while its batch
    # runs, and charged what it cost when it ends: the budget covers all 300 answers, not all 300 estimates.
    server = fake_server("--batch-seconds", "1")
    records = prompts(300, "budgeted")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    done = batch_run(server, source, out, "--max-cost", "0.02", *PRICE)
    assert done.returncode == 0, done.stderr
    assert_each_id_once_and_right(out, records)
    spent = sum(row["cost_usd"] for row in read_jsonl(out))
    assert spent <= 0.02
    assert server.stats()["batches"]["created"] > 1  # not all at once: the estimates did not fit together


def test_a_batch_that_failed_whole_while_the_cache_answered_one_of_its_requests(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--batch-seconds", "1")
    records = [{"id": i, "prompt": f"cached {i}" + (" [[batch_invalid]]" if i == 5 else "")} for i in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    assert batch_run(server, source, out, "--cache", str(cache), "--detach").returncode == 0
    # Meanwhile another run, online, puts the answer to one of the batch's requests in the shared cache.
    other = write_jsonl(tmp_path / "other.jsonl", records[:1])
    online = run_cli(*run_args(server, other, tmp_path / "other.out.jsonl", "openai/fake", "--cache", str(cache)))
    assert online.returncode == 0, online.stderr
    resumed = batch_run(server, source, out, "--cache", str(cache), "--resume")
    assert resumed.returncode == 1, resumed.stderr  # the invalid line, alone
    assert "internal error" not in resumed.stderr
    rows = {row["id"]: row for row in read_jsonl(out)}
    assert sorted(rows) == list(range(10)) and rows[0]["cached"] is True
    assert [i for i, row in rows.items() if row["error"] is not None] == [5]


# -- a batch made just before a crash ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["openai/fake", "anthropic/fake"])
def test_a_batch_created_just_before_a_crash_and_never_journaled_is_found_on_resume(
    fake_server: Callable[..., FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "2", "--log", str(log))
    records = prompts(300, "unjournaled")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert batch_run(server, source, out, "--batch-size", "100", "--detach", model=model).returncode == 0
    # Killed between the provider making part 3's batch and the journal naming it: its id line never written.
    journal = tmp_path / "out.jsonl.batches.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(line for line in lines if not line.startswith('{"part":3,"batch"')))
    assert len(journal.read_text().splitlines()) == len(lines) - 1
    resumed = batch_run(server, source, out, "--batch-size", "100", "--resume", model=model)
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)
    assert len(log_events(log, "batch_created")) == 3  # found, not made again
    assert server.stats()["answered_twice"] == 0
    assert len({row["batch_id"] for row in read_jsonl(out)}) == 3


# -- Ctrl-C ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_leaves_the_batches_running_and_prints_the_resume_command(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "8", "--log", str(log))
    records = prompts(400, "interrupted")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.batches.jsonl"
    process = start_cli(*run_args(server, source, out, "openai/fake", "--batch", "--batch-size", "100"))
    with reaped(process):
        deadline = time.monotonic() + 30
        while _count(journal, b'"batch":') < 4 and time.monotonic() < deadline:  # all four submitted
            assert process.poll() is None
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "4 batches are live at the provider" in stderr
    assert log_events(log, "batch_cancel") == []  # paid for: left to run
    command = stderr.split("To collect the rest, run:\n", 1)[1].strip().splitlines()[0]
    assert command.endswith("--resume")
    resumed = run_cli(*command.split()[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)
    assert len(log_events(log, "batch_created")) == 4 and server.stats()["answered_twice"] == 0


@pytest.mark.slow
def test_a_provider_that_cannot_be_asked_for_an_unjournaled_batch_stops_the_run_resumably(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "2", "--log", str(log))
    records = prompts(300, "unasked")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert batch_run(server, source, out, "--batch-size", "100", "--detach").returncode == 0
    journal = tmp_path / "out.jsonl.batches.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(line for line in lines if not line.startswith('{"part":3,"batch"')))
    before = journal.read_bytes()

    # Listing the batches fails for a while: part 3 is neither sent again (it may be live) nor lost.
    def listing(request: web.Request) -> bool:
        return request.method == "GET" and request.path == "/v1/batches"

    with failing_gateway(server.url.removesuffix("/v1"), listing) as root:
        args = run_args(server, source, out, "openai/fake", "--batch", "--batch-size", "100", "--resume")
        stopped = run_cli(*[root + "/v1" if arg == server.url else arg for arg in args])
    assert stopped.returncode == 3, stopped.stderr
    assert "could not ask for the batch of part 3" in stopped.stderr and "--resume" in stopped.stderr
    assert journal.read_bytes() == before  # part 3 still waits to be asked about
    assert len(log_events(log, "batch_created")) == 3

    resumed = batch_run(server, source, out, "--batch-size", "100", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)
    assert len(log_events(log, "batch_created")) == 3 and server.stats()["answered_twice"] == 0


def test_a_batch_the_provider_does_not_know_stops_the_run_rather_than_being_polled_for_ever(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # The run was begun against one endpoint (or key) and resumed against another, which has no such batch.
    first, other = fake_server("--batch-seconds", "1"), fake_server("--batch-seconds", "1")
    records = prompts(20, "elsewhere")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert batch_run(first, source, out, "--detach").returncode == 0
    batch_id = read_jsonl(tmp_path / "out.jsonl.batches.jsonl")[2]["batch"]
    process = start_cli(*run_args(other, source, out, "openai/fake", "--batch", "--resume"))
    with reaped(process):
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert f"{batch_id} of part 1 cannot be read" in stderr and "--resume" in stderr
    assert other.stats()["batches"]["created"] == 0  # nor sent again: it may be live where it was made
    resumed = batch_run(first, source, out, "--resume")  # where it is
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)


def test_results_the_provider_refuses_for_good_stop_the_run_rather_than_being_read_for_ever(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--batch-seconds", "1")
    records = prompts(20, "unreadable")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"

    def contents(request: web.Request) -> bool:
        return request.method == "GET" and request.path.endswith("/content")

    with failing_gateway(server.url.removesuffix("/v1"), contents, status=404) as root:
        process = start_cli(
            "run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", root + "/v1", "--batch"
        )
        with reaped(process):
            _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert "results of the batch" in stderr and "cannot be read" in stderr and "--resume" in stderr
    assert server.stats()["batches"]["created"] == 1  # nor sent again
    resumed = batch_run(server, source, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)
    assert server.stats()["batches"]["created"] == 1


@pytest.mark.slow
def test_killed_while_sending_online_after_by_the_resume_sends_only_what_is_left(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "60", "--latency", "0.05", "--log", str(log))
    records = prompts(300, "spilled")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    args = run_args(server, source, out, "openai/fake", "--batch", "--by", "8s", "--concurrency", "4", "--quiet")
    process = start_cli(*args)
    with reaped(process):
        deadline = time.monotonic() + 60
        while b'"lane": "online"' not in (out.read_bytes() if out.exists() else b""):
            assert process.poll() is None and time.monotonic() < deadline, "nothing went online"
            time.sleep(0.01)
        process.kill()
        process.wait(timeout=10)
    whole = [line for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]  # none torn
    assert 0 < len(whole) < 300
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_each_id_once_and_right(out, records)
    stats = server.stats()
    # Online, what was in flight at the kill was answered and never written: sent again, as in any online run
    # (at most the 4 in flight). Nothing a batch answered is sent again.
    assert stats["answered"] - 300 == stats["answered_twice"] <= 4, stats
    assert len(log_events(log, "batch_created")) == 1  # the deadline had passed: nothing new went by batch


def test_a_part_killed_before_its_collected_line_whose_answers_are_all_written_is_settled_on_resume(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--batch-seconds", "1")
    records = prompts(50, "settled")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert batch_run(server, source, out, "--batch-size", "25").returncode == 0
    # As if killed after the last answer was written and before the journal said the part was collected.
    journal = tmp_path / "out.jsonl.batches.jsonl"
    journal.write_text("".join(line for line in journal.read_text().splitlines(True) if '"collected"' not in line))
    resumed = batch_run(server, source, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "running at the provider" not in resumed.stderr  # they ended: nothing to come back for
    assert not Journal.peek(journal).live_parts()  # type: ignore[union-attr]
    again = batch_run(server, source, out, "--overwrite")  # a fresh run is not refused for them
    assert again.returncode == 0, again.stderr
    assert_each_id_once_and_right(out, records)


# -- the cache, and several models -----------------------------------------------------------------------


def test_cache_hits_are_never_submitted(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "1", "--log", str(log))
    records = prompts(60, "remembered")
    cache = tmp_path / "cache.sqlite"
    first = write_jsonl(tmp_path / "first.jsonl", records[:40])
    assert batch_run(server, first, tmp_path / "1.jsonl", "--cache", str(cache)).returncode == 0
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "2.jsonl"
    done = batch_run(server, source, out, "--cache", str(cache))
    assert done.returncode == 0, done.stderr
    assert_each_id_once_and_right(out, records)
    created = log_events(log, "batch_created")
    assert [len(entry["custom_ids"]) for entry in created] == [40, 20]  # only the 20 the cache did not hold
    rows = {row["id"]: row for row in read_jsonl(out)}
    assert all(rows[i]["cached"] is True and rows[i]["cost_usd"] in (0, None) for i in range(40))


def test_several_models_detached_then_resumed_share_one_journal(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "provider.log"
    server = fake_server("--batch-seconds", "2", "--batch-error-rate", "0.05", "--log", str(log))
    records = prompts(200, "fanned")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    models = ("-m", "openai/fake-2", "--batch-size", "50")  # and openai/fake
    detached = batch_run(server, source, out, *models, "--detach")
    assert detached.returncode == 0, detached.stderr
    resumed = batch_run(server, source, out, *models, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rows = read_jsonl(out)
    assert Counter((row["id"], row["model"]) for row in rows) == Counter(
        (r["id"], m) for r in records for m in ("openai/fake", "openai/fake-2")
    )
    assert all(row["error"] is None and row["lane"] == "batch" for row in rows)
    assert server.stats()["answered"] == 400  # each prompt once a model (and every batch's end logged)
    journal = tmp_path / "out.jsonl.batches.jsonl"
    ours = {prompt_digest(str(r["prompt"])) for r in records}
    assert_never_two_live_batches_for_one_prompt(log, ours, 0, journal=journal)
    assert not Journal.peek(journal).live_parts()  # type: ignore[union-attr]
