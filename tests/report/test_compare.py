"""`llmgather compare`: its numbers checked against the output file they come from."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, run_cli

from llmgather.fake import prompt_digest
from llmgather.fake.server import count_tokens
from llmgather.stats import LatencyHistogram


def model_rows(csv_text: str) -> dict[str, dict[str, str]]:
    first_table = csv_text.split("\n\n", 1)[0].replace("\r\n", "\n")
    return {row["model"]: row for row in csv.DictReader(io.StringIO(first_table))}


def test_the_per_model_numbers_are_those_of_the_output_file(server: FakeServer, tmp_path: Path) -> None:
    source = tmp_path / "questions.csv"
    lines = ["id,question,answer"] + [
        f"q{i},question {i}{' [[fake status=400]]' if i % 7 == 0 else ''},x" for i in range(60)
    ]
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    done = run_cli(
        *("run", str(source), "-o", str(out), "-m", "openai/a", "-m", "openai/b", "--api-base", server.url),
        *("--template", "{question}", "--price", "openai/a=1000,2000"),
    )
    assert done.returncode == 1, done.stderr  # the forced 400s
    compared = run_cli("compare", str(out), "--format", "csv")
    assert compared.returncode == 0, compared.stderr
    table = model_rows(compared.stdout)
    records = read_jsonl(out)
    for model in ("openai/a", "openai/b"):
        mine = [r for r in records if r["model"] == model]
        ok = [r for r in mine if r["error"] is None]
        row = table[model]
        assert row["results"] == str(len(mine)) == "60"
        assert row["succeeded"] == f"{len(ok) / len(mine):.1%}"
        assert row["prompt tokens"] == str(sum(r["usage"]["prompt_tokens"] for r in ok))
        assert row["completion tokens"] == str(sum(r["usage"]["completion_tokens"] for r in ok))
        histogram = LatencyHistogram()
        for r in ok:
            histogram.add(r["latency_s"])
        assert row["p95 s"] == f"{histogram.percentile(95):.3f}"
    cost_a = sum(r["cost_usd"] or 0 for r in records if r["model"] == "openai/a")
    assert cost_a > 0 and table["openai/a"]["cost USD"] == f"{cost_a:.4f}"
    assert table["openai/b"]["cost USD"] == "-"
    assert table["openai/a"]["accuracy"] == "0.0%"  # the fake provider's answers are digests, never 'x'
    answers = compared.stdout.split("\n\n", 1)[1]
    assert answers.startswith("id,openai/a,openai/b") and "(error)" in answers


def write_results(path: Path, results: list[tuple[str, str, str | None, str]]) -> Path:
    lines = []
    for request_id, model, content, expected in results:
        record = {"id": request_id, "model": model, "content": content, "usage": None, "latency_s": 0.5}
        record |= {"attempts": 1, "cost_usd": None, "error": None, "cached": False, "row": {"answer": expected}}
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_exact_match_accuracy_ignores_case_space_and_final_punctuation(tmp_path: Path) -> None:
    out = write_results(
        tmp_path / "out.jsonl",
        [
            ("q1", "a", " New Delhi. ", "New Delhi"),
            ("q2", "a", "4", "4"),
            ("q1", "b", "Mumbai", "New Delhi"),
            ("q2", "b", "four!", "4"),
        ],
    )
    compared = run_cli("compare", str(out), "--format", "csv")
    table = model_rows(compared.stdout)
    assert table["a"]["accuracy"] == "100.0%" and table["b"]["accuracy"] == "0.0%"
    markdown = run_cli("compare", str(out), "--format", "markdown").stdout
    assert "| a | 2 | 100.0% |" in markdown and "exact match with 'answer'" in markdown


def test_models_are_listed_by_name_whichever_answered_first(tmp_path: Path) -> None:
    out = write_results(tmp_path / "out.jsonl", [("q1", "b", "x", "x"), ("q2", "a", "y", "y"), ("q1", "a", "x", "x")])
    compared = run_cli("compare", str(out), "--format", "csv")
    assert compared.returncode == 0, compared.stderr
    models, answers = compared.stdout.split("\n\n", 1)
    assert [line.split(",")[0] for line in models.splitlines()[1:]] == ["a", "b"]
    assert answers.startswith("id,a,b\n")


def test_only_the_prompts_where_the_models_differ(tmp_path: Path) -> None:
    out = write_results(
        tmp_path / "out.jsonl",
        [
            ("same", "a", "New Delhi", ""),
            ("same", "b", "new delhi.", ""),
            ("other", "a", "4", ""),
            ("other", "b", "5", ""),
            ("missing", "a", "x", ""),
        ],
    )
    differ = run_cli("compare", str(out), "--format", "csv", "--answers", "differ")
    assert differ.returncode == 0, differ.stderr
    answers = differ.stdout.split("\n\n", 1)[1].splitlines()
    assert answers == ["id,a,b", "missing,x,", "other,4,5"]
    alone = run_cli("compare", str(out), "--format", "csv", "--answers", "none")
    assert alone.returncode == 0 and "\n\n" not in alone.stdout and alone.stdout.startswith("model,")


def test_a_scorer_plugs_in_as_module_function(tmp_path: Path) -> None:
    out = write_results(tmp_path / "out.jsonl", [("q1", "a", "four", "4"), ("q2", "a", "five", "5")])
    (tmp_path / "my_scorers.py").write_text(
        "WORDS = {'four': '4', 'five': '6'}\ndef numeric(answer, row):\n    return WORDS.get(answer) == row['answer']\n"
    )
    compared = subprocess.run(
        [sys.executable, "-m", "llmgather", "compare", str(out), "--format", "csv", "--scorer", "my_scorers:numeric"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ},
        timeout=60,
    )
    assert compared.returncode == 0, compared.stderr
    assert model_rows(compared.stdout)["a"]["accuracy"] == "50.0%"
    bad = run_cli("compare", str(out), "--scorer", "no_such_module:f")
    assert bad.returncode == 2 and "no_such_module" in bad.stderr


@pytest.mark.slow
def test_three_models_fan_out_each_under_its_own_limits(fake_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b", "c")}
    servers = {
        "a": fake_server("--rpm", "2400", "--latency", "0.05", "--log", str(logs["a"])),
        "b": fake_server("--tpm", "60000", "--latency", "0.1", "--log", str(logs["b"])),
        "c": fake_server("--latency", "0.02", "--log", str(logs["c"])),
    }
    models = tmp_path / "models.toml"
    models.write_text(
        f'[[model]]\nname = "openai/a"\napi_base = "{servers["a"].url}"\nrpm = 2400\n\n'
        f'[[model]]\nname = "openai/b"\napi_base = "{servers["b"].url}"\ntpm = 60000\n\n'
        f'[[model]]\nname = "openai/c"\napi_base = "{servers["c"].url}"\nconcurrency = 5\nprice = [1000, 2000]\n'
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"fan out {i}"}) + "\n" for i in range(200)))
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--models", str(models), "--concurrency", "40")
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert {(r["id"], r["model"]) for r in records} == {(i, f"openai/{m}") for i in range(200) for m in "abc"}
    assert all(r["cost_usd"] for r in records if r["model"] == "openai/c")
    for name, server in servers.items():
        stats = server.stats()
        assert stats["answered"] == 200 and stats["rate_limited"] <= 2, (name, stats)
    assert servers["c"].stats()["max_in_flight"] <= 5
    # Arrivals at a (answer time less its latency): no second holds more than its 40.
    arrivals = sorted(json.loads(line)["t"] - 0.05 for line in logs["a"].read_text().splitlines())
    busiest = max(sum(1 for t in arrivals[i:] if t < start + 1.0) for i, start in enumerate(arrivals))
    assert busiest <= 40 + 2, busiest
    # And at b, the tokens that arrived in any second stay within its 1,000.
    tokens = {prompt_digest(f"fan out {i}"): count_tokens(f"fan out {i}") + 16 for i in range(200)}
    at_b = sorted(
        (json.loads(line)["t"] - 0.1, tokens[json.loads(line)["prompt"]]) for line in logs["b"].read_text().splitlines()
    )
    heaviest = max(sum(n for t, n in at_b[i:] if t < start + 1.0) for i, (start, _) in enumerate(at_b))
    assert heaviest <= 1000 + 18, heaviest
    assert "openai/a at" in done.stderr and "openai/b at" in done.stderr and "openai/c at" in done.stderr


def test_a_models_file_with_an_unknown_setting_names_it(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[[model]]\nname = "openai/a"\nrpmm = 500\n')
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "x"}\n')
    done = run_cli("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--models", str(models))
    assert done.returncode == 2 and "'rpmm'" in done.stderr and str(models) in done.stderr


def test_a_request_that_fails_for_good_goes_to_the_fallback(fake_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    flaky = fake_server("--fail-rate", "0.3", "--seed", "3")
    steady = fake_server()
    models = tmp_path / "models.toml"
    models.write_text(
        f'[[model]]\nname = "openai/flaky"\napi_base = "{flaky.url}"\n\n'
        f'[[model]]\nname = "openai/steady"\napi_base = "{steady.url}"\n'
    )
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"fall back {i}"}) + "\n" for i in range(100)))
    out = tmp_path / "out.jsonl"
    done = run_cli(
        *("run", str(source), "-o", str(out), "--models", str(models), "--fallback", "openai/steady"),
        "--max-retries",
        "0",
    )
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert len(records) == 100 and all(r["error"] is None and r["model"] == "openai/flaky" for r in records)
    rescued = [r for r in records if r.get("answered_by") == "openai/steady"]
    assert len(rescued) == flaky.stats()["by_status"]["503"] == steady.stats()["requests"] > 10
    assert all(r["attempts"] == 2 for r in rescued)
    assert f"100 succeeded ({len(rescued)} answered by a fallback)" in done.stderr


def test_a_permanent_error_goes_to_the_fallback_at_once(fake_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    short = fake_server("--max-context", "20")  # prompts over 20 tokens: 400 context_length_exceeded
    long = fake_server()
    models = tmp_path / "models.toml"
    models.write_text(
        f'[[model]]\nname = "openai/short"\napi_base = "{short.url}"\n\n'
        f'[[model]]\nname = "openai/long"\napi_base = "{long.url}"\n'
    )
    source = tmp_path / "in.jsonl"
    prompts = [f"question {i} " + ("with a great deal of context " * 10 if i % 4 == 0 else "") for i in range(40)]
    source.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "out.jsonl"
    done = run_cli("run", str(source), "-o", str(out), "--models", str(models), "--fallback", "openai/long")
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert all(r["error"] is None for r in rows.values())
    assert {i for i, r in rows.items() if r.get("answered_by") == "openai/long"} == set(range(0, 40, 4))
    assert short.stats()["requests"] == 40  # the 400 is not retried
    assert long.stats()["requests"] == 10


def test_compare_as_html_and_the_report_are_one_page_with_one_table(tmp_path: Path) -> None:
    out = write_results(tmp_path / "out.jsonl", [("q1", "a", "x", "x"), ("q1", "b", "y", "x")])
    compared = run_cli("compare", str(out), "--format", "html")
    assert compared.returncode == 0, compared.stderr
    page = tmp_path / "report.html"
    assert run_cli("report", str(out), "-o", str(page)).returncode == 0
    report = page.read_text()

    def style(html: str) -> str:
        return html.split("<style>", 1)[1].split("</style>", 1)[0]

    def first_table(html: str) -> str:
        return "<table" + html.split("<table", 1)[1].split("</table>", 1)[0]

    assert style(compared.stdout) == style(report)
    assert first_table(compared.stdout) == first_table(report)
    assert "<td>a</td>" in first_table(report) and "<td>b</td>" in first_table(report)


def test_a_result_line_whose_id_is_not_a_string_or_a_number_is_named(tmp_path: Path) -> None:
    out = write_results(tmp_path / "out.jsonl", [("q1", "a", "x", "x"), ("q2", "a", "y", "y")])
    lines = out.read_text().splitlines()
    lines[1] = lines[1].replace('"id": "q2"', '"id": ["q2"]')
    out.write_text("\n".join(lines) + "\n")
    for command in (["compare", str(out)], ["report", str(out), "-o", str(tmp_path / "page.html")]):
        done = run_cli(*command)
        assert done.returncode == 2 and f"{out}:2" in done.stderr and "id" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_line_with_a_field_of_the_wrong_kind_is_one_error_naming_it(tmp_path: Path) -> None:
    # A hand-edited cost ("free") was an internal error, exit 1.
    good = {"id": 1, "model": "m", "content": "x", "latency_s": 0.1, "attempts": 1, "cost_usd": 0.1, "error": None}
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": 2, "cost_usd": "free"}) + "\n")
    for command in (("compare", str(out)), ("report", str(out), "-o", str(tmp_path / "r.html"))):
        done = run_cli(*command)
        assert done.returncode == 2
        assert f"{out}:2: not a result line" in done.stderr and "Traceback" not in done.stderr
