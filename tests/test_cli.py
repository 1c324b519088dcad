"""`llmgather run` as a user runs it: a separate process against a fake-provider process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, run_cli, write_jsonl

from llmgather.fake import expected_content

OUTPUT_KEYS = {
    *("id", "model", "content", "usage", "latency_s", "attempts", "cost_usd", "error"),
    *("cached", "rate_limited", "finished_at", "digest"),
}


def run_against(server: FakeServer, input_arg: str, out: Path, *extra: str, stdin: str | None = None):
    return run_cli("run", input_arg, "-o", str(out), "-m", "openai/fake", "--api-base", server.url, *extra, stdin=stdin)


def test_the_three_input_shapes_and_pass_through_parameters(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "p", "prompt": "plain prompt", "max_tokens": 5},
            {"id": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
            {
                "custom_id": "b",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "ignored", "messages": [{"role": "user", "content": "batch line"}], "max_tokens": 3},
            },
        ],
    )
    out = tmp_path / "out.jsonl"
    done = run_against(server, str(source), out)
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in read_jsonl(out)}
    assert set(rows) == {"p", "m", "b"}
    assert all(set(row) == OUTPUT_KEYS for row in rows.values())
    assert rows["p"]["content"] == expected_content("plain prompt", 5)
    assert rows["p"]["usage"]["completion_tokens"] == 5
    assert rows["m"]["content"] == expected_content("be brief\nhi")
    assert rows["b"]["content"] == expected_content("batch line", 3)
    assert all(row["error"] is None and row["model"] == "openai/fake" for row in rows.values())
    assert "p50" in done.stderr and "3 succeeded" in done.stderr


def test_standard_input(server: FakeServer, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"id": i, "prompt": f"q{i}"}) + "\n" for i in range(25))
    out = tmp_path / "out.jsonl"
    done = run_against(server, "-", out, stdin=lines)
    assert done.returncode == 0, done.stderr
    assert sorted(row["id"] for row in read_jsonl(out)) == list(range(25))


def test_results_go_to_standard_output_without_o(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    done = run_cli("run", str(source), "-m", "openai/fake", "--api-base", server.url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["content"] == expected_content("x")
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"id": 1, "prompt": "ok"}', '{"id": 2, "prompt": '], "in.jsonl:2: not valid JSON"),
        (
            ['{"id": 1, "prompt": "ok"}', '{"id": 2, "question": "no prompt"}'],
            "in.jsonl:2: has no 'prompt' or 'messages'",
        ),
        (
            ['{"id": "a", "prompt": "x"}', '{"id": "b", "prompt": "y"}', '{"id": "a", "prompt": "z"}'],
            'in.jsonl:3: id "a" repeats',
        ),
        (['{"id": 1, "messages": "not a list"}'], "in.jsonl:1: 'messages' must be a non-empty list"),
        (["[1, 2]"], "in.jsonl:1: expected a JSON object"),
        (
            ['{"id": 1, "prompt": "x", "max_tokens": 5}', '{"id": 2, "prompt": "y", "max_tokens": "many"}'],
            "in.jsonl:2: 'max_tokens' must be a whole number of at least 1, got \"many\"",
        ),
        (['{"id": 1, "prompt": "x", "temperature": -0.5}'], "in.jsonl:1: 'temperature' must be a number of at least 0"),
        (['{"id": 1, "prompt": "x", "stream": "yes"}'], "in.jsonl:1: 'stream' must be true or false"),
    ],
)
def test_bad_input_exits_2_names_file_and_line_and_sends_nothing(
    server: FakeServer, tmp_path: Path, lines: list[str], message: str
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    done = run_against(server, str(source), out)
    assert done.returncode == 2
    assert message in done.stderr
    assert server.stats()["requests"] == 0
    assert not out.exists() or out.read_text() == ""


def test_exit_1_when_some_requests_fail(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"id": 1, "prompt": "fine"}, {"id": 2, "prompt": "[[fake status=400]]"}]
    )
    out = tmp_path / "out.jsonl"
    done = run_against(server, str(source), out)
    assert done.returncode == 1
    rows = {row["id"]: row for row in read_jsonl(out)}
    assert rows[2]["error"] == {"type": "PermanentError", "status": 400, "message": "forced 400"}
    assert rows[1]["error"] is None


def test_exit_3_on_a_bad_key_with_a_clear_message(fake_server, tmp_path: Path) -> None:
    server = fake_server("--api-key", "sk-the-right-one")
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(100)])
    done = run_against(server, str(source), tmp_path / "out.jsonl", "--concurrency", "4")
    assert done.returncode == 3
    assert "AuthenticationError" in done.stderr and server.url in done.stderr
    assert server.stats()["requests"] <= 4
    assert "sk-test-not-a-real-key" not in done.stderr


def test_a_missing_key_is_a_usage_error_before_anything_is_sent(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"q{i}"} for i in range(5)])
    out = tmp_path / "out.jsonl"
    no_key = {"OPENAI_API_KEY": ""}  # set but empty counts as unset, as a shell user would mean it
    hosted = run_cli("run", str(source), "-o", str(out), "-m", "openai/gpt-5-mini", env=no_key)
    assert hosted.returncode == 2 and "OPENAI_API_KEY is not set" in hosted.stderr and not out.exists()
    named = run_against(server, str(source), out, "--api-key-env", "LLMGATHER_TEST_UNSET_KEY")
    assert named.returncode == 2 and "LLMGATHER_TEST_UNSET_KEY is not set" in named.stderr
    assert server.stats()["requests"] == 0 and not out.exists()
    estimate = run_cli("run", str(source), "-m", "openai/gpt-5-mini", "--dry-run", env=no_key)
    assert estimate.returncode == 0, estimate.stderr  # a dry run needs no key
    local = run_cli("run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, env=no_key)
    assert local.returncode == 0, local.stderr  # a local server may need none


def test_an_existing_output_is_never_clobbered(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "x"}])
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    done = run_against(server, str(source), out)
    assert done.returncode == 2 and "--overwrite" in done.stderr
    assert out.read_text() == "precious\n"
    assert run_against(server, str(source), out, "--overwrite").returncode == 0


def test_a_missing_input_file_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli("run", str(tmp_path / "nope.jsonl"), "-m", "openai/fake")
    assert done.returncode == 2 and "no such input file" in done.stderr


def test_help_imports_nothing_heavy() -> None:
    code = "import sys, llmgather.cli; print(sorted(m for m in ('aiohttp', 'rich', 'litellm') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    for args in (["--help"], ["run", "--help"], ["fake-server", "--help"]):
        done = run_cli(*args)
        assert done.returncode == 0 and "usage" in done.stdout.lower()


def shell(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A shell line, for redirections a subprocess call cannot spell (closing a standard stream)."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key"}
    return subprocess.run(
        ["bash", "-c", script, "bash", sys.executable, *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_closed_standard_streams_lose_nothing_and_crash_nothing(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"closed {i}"} for i in range(5)])
    run = f'"$1" -m llmgather run "$2" -m openai/fake --api-base {server.url}'
    for n, closing in enumerate((">&-", "2>&-", "-q 2>&-")):
        out = tmp_path / f"out{n}.jsonl"
        done = shell(f'{run} -o "$3" {closing}', str(source), str(out))
        assert done.returncode == 0 and "Traceback" not in done.stderr, (closing, done.stderr)
        assert sorted(row["id"] for row in read_jsonl(out)) == list(range(5))
    lost = shell(f"{run} -o - >&-", str(source))
    assert lost.returncode == 2 and "standard output is closed" in lost.stderr, lost.stderr


def test_the_output_is_never_the_file_standard_input_or_the_report_reads(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"same {i}"} for i in range(3)])
    before = source.read_bytes()
    run = f'"$1" -m llmgather run - -m openai/fake --api-base {server.url}'
    done = shell(f'{run} -o "$2" --overwrite < "$2"', str(source))
    assert done.returncode == 2 and source.read_bytes() == before, done.stderr
    out = tmp_path / "out.jsonl"
    assert run_against(server, str(source), out).returncode == 0
    results = out.read_bytes()
    page = run_cli("report", str(out), "-o", str(out))
    assert page.returncode == 2 and out.read_bytes() == results, page.stderr
