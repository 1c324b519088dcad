"""Evaluation inputs: CSV and Parquet rows, prompt templates, and the row carried into the output."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import FakeServer, read_jsonl, run_cli

from llmgather.fake import expected_content

QUESTIONS = [
    {"id": "q1", "question": "What is the capital of India?", "answer": "New Delhi", "category": "geography"},
    {"id": "q2", "question": "What is 2 + 2?", "answer": "4", "category": "arithmetic"},
    {"id": "q3", "question": "Name a prime above 10.", "answer": "11", "category": "arithmetic"},
]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_rows(server: FakeServer, source: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_cli("run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, *args)


def test_csv_rows_fill_the_template_and_come_back_under_row(server: FakeServer, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "questions.csv", QUESTIONS)
    out = tmp_path / "out.jsonl"
    done = run_rows(server, source, out, "--template", "Answer briefly: {question}")
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in read_jsonl(out)}
    for question in QUESTIONS:
        row = rows[question["id"]]
        assert row["content"] == expected_content(f"Answer briefly: {question['question']}")
        assert row["row"] == {
            "question": question["question"],
            "answer": question["answer"],
            "category": question["category"],
        }


def test_parquet_rows_with_a_jinja_template_and_a_system_message(server: FakeServer, tmp_path: Path) -> None:
    source = tmp_path / "questions.parquet"
    pq.write_table(pa.Table.from_pylist([{**q, "points": i + 1} for i, q in enumerate(QUESTIONS)]), source)
    template = tmp_path / "prompt.j2"
    template.write_text("{{ category | upper }}: {{ question }}")
    out = tmp_path / "out.jsonl"
    done = run_rows(server, source, out, "--template-file", str(template), "--system", "Be brief.")
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in read_jsonl(out)}
    for i, question in enumerate(QUESTIONS):
        prompt = f"{question['category'].upper()}: {question['question']}"
        assert rows[question["id"]]["content"] == expected_content(f"Be brief.\n{prompt}")
        assert rows[question["id"]]["row"]["points"] == i + 1


def test_a_missing_column_names_the_column_and_the_line_and_sends_nothing(server: FakeServer, tmp_path: Path) -> None:
    rows = [dict(q) for q in QUESTIONS]
    source = tmp_path / "questions.csv"
    write_csv(source, rows)
    done = run_rows(server, source, tmp_path / "out.jsonl", "--template", "{question} ({difficulty})")
    assert done.returncode == 2
    assert "'difficulty'" in done.stderr and f"{source}:2" in done.stderr
    assert server.stats()["requests"] == 0


def test_a_row_without_prompt_or_template_is_an_error(server: FakeServer, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "questions.csv", QUESTIONS)
    done = run_rows(server, source, tmp_path / "out.jsonl")
    assert done.returncode == 2 and "--template" in done.stderr and "question" in done.stderr
    assert server.stats()["requests"] == 0


def test_dry_run_sends_nothing_and_estimates_each_model(fake_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = fake_server()
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": {i}, "prompt": "{"x" * 400}", "max_tokens": 10}}\n' for i in range(50)))
    out = tmp_path / "out.jsonl"
    done = run_cli(
        *("run", str(source), "-o", str(out), "-m", "openai/a", "-m", "openai/b", "--api-base", server.url),
        *("--price", "openai/a=1000,2000", "--dry-run"),
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.startswith("openai/")}
    # 400 characters are 100 tokens, plus 4 of framing; 10 completion tokens each.
    assert rows["openai/a"][1:5] == ["50", "5,200", "500", f"{(5200 * 1000 + 500 * 2000) / 1e6:.4f}"]
    assert rows["openai/b"][4] == "unknown" and "--price" in done.stdout
    assert server.stats()["requests"] == 0 and not out.exists()


def test_costs_from_a_given_price_are_on_each_line_and_totalled(server: FakeServer, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": {i}, "prompt": "priced prompt {i}"}}\n' for i in range(40)))
    out = tmp_path / "out.jsonl"
    done = run_rows(server, source, out, "--price", "openai/fake=1000,2000")
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    for row in rows:
        usage = row["usage"]
        assert row["cost_usd"] == round((usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1e6, 8)
    assert f"cost       ${sum(row['cost_usd'] for row in rows):.4f}" in done.stderr
