"""What a batch run's journal forbids: forgetting live batches. An online run, a fresh one, or `--overwrite`
on an output whose batches are still running at the provider would send their requests again and pay twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, run_cli, write_jsonl
from test_durability import prompts

import llmgather
from llmgather.errors import InputError


def detached(server: FakeServer, tmp_path: Path) -> tuple[Path, Path]:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(20, "held"))
    out = tmp_path / "out.jsonl"
    done = run_cli(
        "run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, "--batch", "--detach"
    )
    assert done.returncode == 0, done.stderr
    assert "--batch --resume" in done.stderr and "--detach" not in done.stderr.split("run:")[-1]
    return source, out


@pytest.mark.parametrize("how", [("--resume",), ("--overwrite",), ("--overwrite", "--batch")])
def test_a_run_that_would_forget_live_batches_is_refused_before_the_output_is_touched(
    fake_server: Callable[..., FakeServer], tmp_path: Path, how: tuple[str, ...]
) -> None:
    server = fake_server("--batch-seconds", "30")
    source, out = detached(server, tmp_path)
    out.write_text('{"id": "kept"}\n')  # whatever is there must stay
    done = run_cli("run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, *how)
    assert done.returncode == 2, done.stderr
    assert "1 batches of an earlier --batch run are still live" in done.stderr
    assert f"llmgather batches {out.name} --cancel" in done.stderr
    assert out.read_text() == '{"id": "kept"}\n'
    assert server.stats()["requests"] == 0  # nothing went online
    assert server.stats()["batches"]["created"] == 1


def test_the_python_api_refuses_alike(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    server = fake_server("--batch-seconds", "30")
    source, out = detached(server, tmp_path)
    texts = [record["prompt"] for record in read_jsonl(source)]
    with pytest.raises(InputError, match="still live"):
        llmgather.run(texts, model="openai/fake", api_base=server.url, api_key="k", output=out, resume=True)
    assert server.stats()["requests"] == 0


def test_a_client_is_online_only() -> None:
    with pytest.raises(InputError, match=r"batch= goes with llmgather\.run or gather"):
        llmgather.Client("openai/fake", api_base="http://127.0.0.1:9/v1", api_key="k", batch=True, output="o.jsonl")


def test_cancelled_batches_let_overwrite_start_over_but_an_online_resume_is_still_refused(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--batch-seconds", "30")
    source, out = detached(server, tmp_path)
    cancel = run_cli("batches", str(out), "--cancel")
    assert cancel.returncode == 0, cancel.stderr
    online = ("run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url)
    refused = run_cli(*online, "--resume")
    assert refused.returncode == 2 and "still live" in refused.stderr  # its answers would be paid twice
    fresh = run_cli(*online, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr
    assert len(read_jsonl(out)) == 20


@pytest.mark.slow  # four tries to connect, 14 s of backoff
def test_a_submission_cut_short_is_told_as_such_not_as_a_running_batch(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(5, "dead"))
    out = tmp_path / "out.jsonl"
    dead = "http://127.0.0.1:9/v1"  # nothing listens: the batch was never made
    done = run_cli("run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", dead, "--batch")
    assert done.returncode == 3, done.stderr
    assert "1 submissions were cut short" in done.stderr and "batches are live" not in done.stderr
    assert "--batch --resume" in done.stderr
