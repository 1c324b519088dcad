"""The one run path at its edges: a run that cannot write stops whole and resumable, standard output as the
output, one line for every bad path, an input that changes under the run."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import FakeServer, read_jsonl, run_cli, start_cli, write_jsonl

from llmgather.fake import expected_content


def prompts(n: int, tag: str) -> list[dict[str, object]]:
    return [{"id": f"{tag}-{i}", "prompt": f"{tag} {i}"} for i in range(n)]


def _small_files(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_mid_run_stops_it_whole_and_the_resume_finishes_it(server: FakeServer, tmp_path: Path) -> None:
    records = prompts(200, "disk")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url]
    full = subprocess.run(
        [sys.executable, "-m", "llmgather", *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_small_files(20_000),
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert full.returncode == 3, full.stderr
    assert "Traceback" not in full.stderr
    assert str(out) in full.stderr and "--resume" in full.stderr
    written = out.read_bytes()
    assert 0 < len(written) <= 20_000 and written.endswith(b"\n")  # whole lines only
    assert 0 < len(read_jsonl(out)) < 200
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rows = read_jsonl(out)
    assert sorted(row["id"] for row in rows) == sorted(str(r["id"]) for r in records)
    assert all(row["content"] == expected_content(f"disk {row['id'].split('-')[1]}") for row in rows)


def test_output_dash_is_standard_output(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3, "dash"))
    done = run_cli("run", str(source), "-o", "-", "-m", "openai/fake", "--api-base", server.url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(line)["id"] for line in done.stdout.splitlines()) == ["dash-0", "dash-1", "dash-2"]
    assert not Path("-").exists()


def test_paths_in_a_missing_folder_get_one_line_each(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(2, "folder"))
    missing = tmp_path / "no" / "such"
    model = ["-m", "openai/fake", "--api-base", server.url]
    for args in (
        ["run", str(source), "-o", str(missing / "out.jsonl"), *model],
        ["run", str(source), "-o", str(tmp_path / "out.jsonl"), "--cache", str(missing / "cache.db"), *model],
    ):
        done = run_cli(*args)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and str(missing) in done.stderr, done.stderr
    out = tmp_path / "done.jsonl"
    assert run_cli("run", str(source), "-o", str(out), *model).returncode == 0
    page = run_cli("report", str(out), "-o", str(missing / "page.html"))
    assert page.returncode == 2 and "Traceback" not in page.stderr, page.stderr
    assert len(page.stderr.strip().splitlines()) == 1 and str(missing) in page.stderr, page.stderr
    assert server.stats()["requests"] == 2  # the refused runs sent nothing


def test_an_input_edited_mid_run_stops_every_model_once_and_the_resume_finishes(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--latency", "0.1")
    records = prompts(40, "edit")
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    args = ["run", str(source), "-o", str(out), "-m", "openai/a", "-m", "openai/b", "--api-base", server.url]
    process = start_cli(*args, "--concurrency", "2")
    deadline = time.monotonic() + 20
    while (not out.exists() or out.stat().st_size == 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert out.stat().st_size > 0 and process.poll() is None, "the run must be under way when its input is edited"
    with source.open("a") as more:
        more.write(json.dumps({"id": "edit-late", "prompt": "edit late"}) + "\n")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3, stderr
    assert stderr.count("the input changed during the run") == 1, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    assert out.read_bytes().endswith(b"\n")
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rows = read_jsonl(out)
    ids = sorted((row["id"], row["model"]) for row in rows)
    expected = sorted((str(r["id"]), m) for r in [*records, {"id": "edit-late"}] for m in ("openai/a", "openai/b"))
    assert ids == expected


def test_a_cache_refused_at_the_start_leaves_the_output_untouched(server: FakeServer, tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(3, "kept"))
    out = tmp_path / "out.jsonl"
    model = ["-m", "openai/fake", "--api-base", server.url]
    assert run_cli("run", str(source), "-o", str(out), *model).returncode == 0
    before = out.read_bytes()
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("not a database, but a file the user cares about\n" * 100)
    for cache in (not_sqlite, tmp_path / "missing" / "cache.db"):
        done = run_cli("run", str(source), "-o", str(out), "--overwrite", "--cache", str(cache), *model)
        assert done.returncode == 2 and str(cache) in done.stderr, done.stderr
        assert out.read_bytes() == before
