"""Input that never ends in a traceback: each bad input is one line naming the file (and line), exit 2.

Most cases run the real command line with --dry-run, which reads and checks the whole input and sends
nothing, so no server is needed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FakeServer, read_jsonl, reaped, run_cli, start_cli, write_jsonl

from llmgather.errors import InputError
from llmgather.io.reader import InputChanged, InputFile, open_input

MODEL = "openai/gpt-4o-mini"


def dry_run(
    source: str | Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli("run", str(source), "-m", MODEL, "--dry-run", *args, stdin=stdin, env=env)


def shell(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A bash command line, for what only a shell does: `<&-` and `<(...)`. $1 is this Python."""
    return subprocess.run(
        ["bash", "-c", script, "bash", sys.executable, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OPENAI_API_KEY": "sk-test-not-a-real-key", **(env or {})},
        timeout=60,
    )


def assert_refused(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2 with one line on stderr, no traceback, and every needle in that line."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


PROMPTS = [{"id": "a", "prompt": "one"}, {"id": "b", "prompt": "two"}]


# 1. A path that is not a readable file.


def test_a_folder_given_as_input_is_named_as_a_folder(tmp_path: Path) -> None:
    assert_refused(dry_run(tmp_path), str(tmp_path), "is a folder")


def test_a_path_that_cannot_be_looked_at_is_one_line(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 300 + ".jsonl")  # stat() fails with ENAMETOOLONG, not "no such file"
    assert_refused(dry_run(too_long), "cannot read it", "File name too long")
    assert_refused(dry_run(tmp_path / "missing.jsonl"), "no such input file", "missing.jsonl")


def test_an_unreadable_file_is_an_input_error_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, whom chmod 000 does not stop: the refusal is made to happen where the file is opened.
    path = write_jsonl(tmp_path / "in.jsonl", PROMPTS)

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(InputError, match=r"in\.jsonl: cannot read it: Permission denied"):
        InputFile(path).check()


# 2. Bytes that are not UTF-8.


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    assert_refused(dry_run(jsonl), f"{jsonl}:2", "not UTF-8", "0xe9")
    table = tmp_path / "in.csv"
    table.write_bytes(b"id,prompt\na,fine\nb,caf\xe9 au lait\n")
    assert_refused(dry_run(table), f"{table}:3", "not UTF-8", "0xe9")


# 3. Parquet that is not Parquet, and Parquet without pyarrow.


def test_a_parquet_file_that_is_not_parquet_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "in.parquet"
    fake.write_text("id,prompt\na,hello\n")
    assert_refused(dry_run(fake), str(fake), "not a readable Parquet file")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(PROMPTS), source)
    shadow = tmp_path / "shadow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named pyarrow')\n")
    path = os.pathsep.join(p for p in (str(shadow.parent), os.environ.get("PYTHONPATH", "")) if p)
    assert_refused(dry_run(source, env={"PYTHONPATH": path}), str(source), "pip install 'llmgather[parquet]'")


# 4. Standard input closed or empty.


def test_a_closed_or_unreadable_standard_input_is_one_line(tmp_path: Path) -> None:
    done = shell(f'exec "$1" -m llmgather run - -m {MODEL} --dry-run <&-')
    assert_refused(done, "<stdin>", "standard input is closed")
    # open for writing only, so reading it fails with EBADF
    done = shell(f'exec "$1" -m llmgather run - -m {MODEL} --dry-run 0>"$2"', str(tmp_path / "sink"))
    assert_refused(done, "<stdin>", "cannot read it: Bad file descriptor")


def test_an_empty_standard_input_is_one_line() -> None:
    assert_refused(dry_run("-", stdin=""), "<stdin>", "no requests")


# 5. Templates that do not parse, or cannot be filled.


def write_questions(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(["id,question,meta", *rows]) + "\n")
    return path


def test_a_jinja_template_that_does_not_parse_names_its_file_and_line(tmp_path: Path) -> None:
    source = write_questions(tmp_path / "q.csv", ["a,What is 2+2?,x"])
    template = tmp_path / "prompt.j2"
    template.write_text("Answer briefly.\n{{ question | }}\n")
    assert_refused(dry_run(source, "--template-file", str(template)), f"{template}:2")


def test_a_format_template_with_an_unbalanced_brace_is_one_line(tmp_path: Path) -> None:
    source = write_questions(tmp_path / "q.csv", ["a,What is 2+2?,x"])
    assert_refused(dry_run(source, "--template", "Answer: {question"), "--template", "'}'")
    assert_refused(dry_run(source, "--template", "Answer: {}"), "--template", "names no column")


def test_a_template_the_row_cannot_fill_names_the_line(tmp_path: Path) -> None:
    source = write_questions(tmp_path / "q.csv", ["a,What is 2+2?,x"])
    done = dry_run(source, "--template", "{question} ({meta[level]})")  # meta is text, not an object
    assert_refused(done, f"{source}:2", "cannot be filled")
    template = tmp_path / "prompt.j2"
    template.write_text("{{ question }} {{ missing_column }}")
    assert_refused(dry_run(source, "--template-file", str(template)), f"{source}:2", "'missing_column'")


# 6. A pipe is read as a stream, and no spool is left behind.


def test_a_pipe_is_read_as_a_stream(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", PROMPTS)
    spools = tmp_path / "tmp"
    spools.mkdir()
    done = shell(f'"$1" -m llmgather run <(cat "$2") -m {MODEL} --dry-run', str(source), env={"TMPDIR": str(spools)})
    assert done.returncode == 0, done.stderr
    assert f"{MODEL} " in done.stdout and " 2 " in done.stdout.split(MODEL)[1].splitlines()[0]
    assert list(spools.iterdir()) == []


def test_a_stdin_spool_is_never_left_behind(tmp_path: Path) -> None:
    spools = tmp_path / "tmp"
    spools.mkdir()
    good = "".join(json.dumps(p) + "\n" for p in PROMPTS)
    assert dry_run("-", stdin=good, env={"TMPDIR": str(spools)}).returncode == 0
    assert_refused(dry_run("-", stdin=good + "not json\n", env={"TMPDIR": str(spools)}), "<stdin>:3")
    assert list(spools.iterdir()) == []


def test_an_input_is_a_context_manager_whose_spool_has_no_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    stdin = io.BytesIO("".join(json.dumps(p) + "\n" for p in PROMPTS).encode())
    with open_input("-", stdin) as source:
        assert source.check() == 2
        assert [r.id for r in source] == ["a", "b"]
        assert list(tmp_path.iterdir()) == []  # nothing with a name that a crash could leave


# 7. An input edited while a run reads it.


def test_an_input_appended_to_after_the_check_stops_the_run(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", PROMPTS)
    source = InputFile(path)
    assert source.check() == 2
    with path.open("a") as more:
        more.write(json.dumps({"id": "c", "prompt": "three"}) + "\n")
    with pytest.raises(InputError, match="changed during the run"):
        list(source)


def test_an_input_edited_in_the_middle_of_the_second_pass_stops_the_run(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", PROMPTS)
    source = InputFile(path)
    source.check()
    requests = iter(source)
    assert next(requests).id == "a"
    path.write_text(json.dumps({"id": "a", "prompt": "one, and more"}) + "\n")
    with pytest.raises(InputError, match="changed during the run"):
        list(requests)


def test_a_line_that_no_longer_parses_is_told_as_a_changed_input(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", PROMPTS)
    source = InputFile(path)
    source.check()
    before = path.stat()
    path.write_text(path.read_text().replace('"two"}', '"two"]'))  # same size: only the content tells
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(
        InputError, match=r"in\.jsonl:2: the input changed during the run: this line is not what was checked"
    ):
        list(source)


SIX_HUNDRED = [{"id": f"q{i:04d}", "prompt": f"question {i}"} for i in range(600)]


def edit_in_place(path: Path, old: bytes, new: bytes) -> int:
    """Overwrite `old` with `new` (as long) where it is in `path`, keeping every other byte; its line number."""
    data = path.read_bytes()
    at = data.index(old)
    with path.open("r+b") as file:
        file.seek(at)
        file.write(new)
    return data.count(b"\n", 0, at) + 1


def test_a_line_edited_in_place_mid_run_is_never_yielded(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", SIX_HUNDRED)
    source = InputFile(path)
    assert source.check() == 600
    requests = iter(source)
    seen = [next(requests).id for _ in range(101)]
    assert edit_in_place(path, b'"id": "q0550"', b'"id": "q0000"') == 551
    with pytest.raises(InputChanged, match=r"in\.jsonl:551: the input changed during the run"):
        seen.extend(request.id for request in requests)
    assert seen == [f"q{i:04d}" for i in range(550)]  # everything before the edited line, and not that line


def test_a_line_edited_in_place_mid_run_is_not_sent(fake_server: Callable[..., FakeServer], tmp_path: Path) -> None:
    server = fake_server("--latency", "0.05")
    path = write_jsonl(tmp_path / "in.jsonl", SIX_HUNDRED)
    out = tmp_path / "out.jsonl"
    run = start_cli(
        "run", str(path), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, "--concurrency", "10"
    )
    with reaped(run):
        deadline = time.monotonic() + 60
        while (not out.exists() or out.read_bytes().count(b"\n") < 100) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert run.poll() is None, "the run must be under way when its input is edited"
        edit_in_place(path, b'"id": "q0550"', b'"id": "q0000"')
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 3, stderr
    assert "in.jsonl:551: the input changed during the run" in stderr, stderr
    ids = [row["id"] for row in read_jsonl(out)]
    assert sorted(ids) == [f"q{i:04d}" for i in range(len(ids))]  # q0000 once: the edited line was not sent
    assert server.stats()["requests"] == len(ids) <= 550


# 8. Messages: known roles, and content that is a string or typed parts.


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"role": "bot", "content": "hi"}, 'role "bot" is not one of system, developer, user, assistant, tool'),
        ({"role": "user", "content": 42}, "content must be a string or a list of parts"),
        ({"role": "user", "content": ["hi"]}, "content must be a string or a list of parts"),
        ({"role": "user", "content": [{"text": "hi"}]}, "content must be a string or a list of parts"),
        ({"role": "user", "content": None}, "content must be a string or a list of parts"),
        ({"role": "user"}, "content must be a string or a list of parts"),
    ],
)
def test_messages_with_an_unknown_role_or_content_are_refused(
    tmp_path: Path, message: dict[str, Any], needle: str
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [PROMPTS[0], {"id": "x", "messages": [message]}])
    assert_refused(dry_run(path), f"{path}:2", "messages[0]", needle)


def test_tool_calls_with_null_content_and_typed_parts_are_valid(tmp_path: Path) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    messages = [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": [{"type": "text", "text": "Add one."}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "2"},
    ]
    done = dry_run(write_jsonl(tmp_path / "in.jsonl", [{"id": "t", "messages": messages}]))
    assert done.returncode == 0, done.stderr


# 9. CSV shapes.


def test_a_csv_with_a_repeated_header_names_the_column(tmp_path: Path) -> None:
    source = tmp_path / "q.csv"
    source.write_text("id,prompt,answer,answer\na,What is 2+2?,4,four\n")
    assert_refused(dry_run(source), str(source), "column 'answer' appears twice")


@pytest.mark.parametrize(("row", "cells"), [("b,What is 3+3?", 2), ("b,What is 3+3?,6,six", 4)])
def test_a_csv_row_with_the_wrong_number_of_cells_is_told_apart(tmp_path: Path, row: str, cells: int) -> None:
    source = tmp_path / "q.csv"
    source.write_text(f"id,prompt,answer\na,What is 2+2?,4\n{row}\n")
    assert_refused(dry_run(source), f"{source}:3: row has {cells} cells, the header has 3")


def test_a_missing_column_is_still_told_as_a_missing_column(tmp_path: Path) -> None:
    source = tmp_path / "q.csv"
    source.write_text("id,question\na,What is 2+2?\n")
    assert_refused(dry_run(source, "--template", "{question} {level}"), f"{source}:2", "needs column 'level'")


# 10. Parquet nested and binary values become JSON.


def test_parquet_nested_and_binary_values_become_json(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("prompt", pa.string()),
            ("tags", pa.list_(pa.int64())),
            ("meta", pa.struct([("level", pa.string()), ("weight", pa.float64())])),
            ("scores", pa.map_(pa.string(), pa.int64())),
            ("text_bytes", pa.binary()),
            ("raw_bytes", pa.binary()),
        ]
    )
    row = {
        "id": "a",
        "prompt": "hi",
        "tags": [1, 2],
        "meta": {"level": "easy", "weight": 0.5},
        "scores": [("x", 1), ("y", 2)],
        "text_bytes": "café".encode(),
        "raw_bytes": b"\xff\x00\x01",
    }
    pq.write_table(pa.Table.from_pylist([row], schema=schema), path)
    source = InputFile(path, kind="parquet")
    source.check()
    (request,) = list(source)
    assert request.row == {
        "tags": [1, 2],
        "meta": {"level": "easy", "weight": 0.5},
        "scores": {"x": 1, "y": 2},
        "text_bytes": "café",
        "raw_bytes": base64.b64encode(b"\xff\x00\x01").decode(),
    }
    assert "b'" not in json.dumps(request.row)
