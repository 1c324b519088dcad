"""The output a run owns: one run at a time, never the input or the cache, whole lines even when writing fails,
and a resume that checks the input still means what the output answered.

Locks and files are real; the failures of writing are real ones too (a file size limit, /dev/full, a closed
pipe, a folder removed), made in child processes where they would otherwise hit the test runner itself.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeServer, read_jsonl, reaped, run_cli, start_cli, write_jsonl

from llmgather.errors import InputError, OutputError
from llmgather.io import OutputFile, ResumeState, open_input, read_results
from llmgather.types import ErrorInfo, Request, Result

MODEL = "openai/fake"


def result(request_id: int | str, *, ok: bool = True, digest: str | None = None) -> Result:
    error = None if ok else ErrorInfo("ServerError", 500, "boom")
    return Result(id=request_id, model=MODEL, content="answer" if ok else None, error=error, digest=digest)


def lines_of(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the last line is torn"
    return [json.loads(line) for line in data.splitlines()]


def at(path: Path) -> str:
    """A path inside a `match=` pattern."""
    return re.escape(str(path))


def child(script: str, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run `script` in a fresh Python process (which imports llmgather as the tests do)."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **options}
    return subprocess.run([sys.executable, "-c", script, *args], text=True, timeout=60, check=False, **options)


# --- one run at a time --------------------------------------------------------------------------------------


def test_a_second_open_is_refused_naming_the_pid_until_the_first_closes(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputFile.open(out) as first:
        first.write(result(1))
        for resume, overwrite in ((False, False), (True, False), (False, True)):
            with pytest.raises(
                InputError, match=rf"{at(out)} is in use by another llmgather run \(pid {os.getpid()}\)"
            ):
                OutputFile.open(out, resume=resume, overwrite=overwrite)
        assert len(lines_of(out)) == 1  # --overwrite beside a running run emptied nothing
        first.write(result(2))
    assert [r["id"] for r in lines_of(out)] == [1, 2]
    with OutputFile.open(out, resume=True) as again:  # released at close: the next run gets it
        assert again.state.done == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no lock file left behind


def test_a_lock_left_by_a_killed_run_blocks_no_one(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(InputError, match=rf"pid {holder.pid}\)"):
            OutputFile.open(out, resume=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    with OutputFile.open(out, resume=True) as output:  # the lock file is still there, the flock died with it
        assert output.state.done == 1
        output.write(result(2))
    assert [r["id"] for r in lines_of(out)] == [1, 2]


_HOLD = """
import sys, time
from pathlib import Path
from llmgather.io import OutputFile
from llmgather.types import Result
output = OutputFile.open(Path(sys.argv[1]))
output.write(Result(id=1, model="openai/fake", content="answer"))
print("holding", flush=True)
time.sleep(60)
"""


def test_a_second_run_on_the_same_output_is_refused_and_the_first_one_finishes_whole(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--latency", "3")
    records = [{"id": i, "prompt": f"owned {i}"} for i in range(10)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    run = ("run", str(source), "-o", str(out), "-m", MODEL, "--api-base", server.url, "--concurrency", "5")
    first = start_cli(*run)  # two rounds of 3 s: long enough for a second run to start beside it
    with reaped(first):
        started = lambda: (tmp_path / ".out.jsonl.lock").exists() or server.stats()["requests"] > 0  # noqa: E731
        _wait_for(started, "the first run to start")
        second = run_cli(*run, "--resume", "--retry-failed")
        assert second.returncode == 2, second.stderr
        assert f"in use by another llmgather run (pid {first.pid})" in second.stderr
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert sorted(row["id"] for row in read_jsonl(out)) == list(range(10))  # each once: nothing paid twice
    assert server.stats()["requests"] == 10


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _a_second_run_reaching_the_running_output(
    fake_server: Callable[..., FakeServer], tmp_path: Path, second_name: Callable[[Path], Path]
) -> None:
    """A first run writes out.jsonl; once it is sending, `second_name` gives another way to that file, and a
    --resume on it must be refused (exit 2, before it reads or sends anything) while the first finishes whole."""
    server = fake_server("--latency", "0.5")
    count = 30
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"owned {i}"} for i in range(count)])
    out = tmp_path / "out.jsonl"
    common = ("-m", MODEL, "--api-base", server.url, "--concurrency", "5")
    first = start_cli("run", str(source), "-o", str(out), *common)  # six rounds of half a second
    with reaped(first):
        _wait_for(lambda: out.exists() and server.stats()["requests"] > 0, "the first run to start")
        second = run_cli("run", str(source), "-o", str(second_name(out)), *common, "--resume")
        assert second.returncode == 2, second.stderr
        assert first.poll() is None, "the first run ended before the second one tried: the test proves nothing"
        assert "in use: another process holds it" in second.stderr, second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert sorted(row["id"] for row in read_jsonl(out)) == list(range(count))  # each once: nothing paid twice
    assert server.stats()["requests"] == count


def test_a_run_on_a_hard_link_to_a_running_output_is_refused(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    def hard_link(out: Path) -> Path:
        link = out.with_name("link.jsonl")
        os.link(out, link)
        return link

    _a_second_run_reaching_the_running_output(fake_server, tmp_path, hard_link)


def test_a_run_on_an_output_whose_lock_file_was_deleted_is_refused(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    def lock_file_deleted(out: Path) -> Path:
        out.with_name(f".{out.name}.lock").unlink()
        return out

    _a_second_run_reaching_the_running_output(fake_server, tmp_path, lock_file_deleted)


def test_the_lock_on_the_file_itself_moves_to_a_rewritten_file_and_goes_at_close(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputFile.open(out) as output:
        for i in range(4):
            output.write(result(i, ok=i % 2 == 0))
    link = tmp_path / "link.jsonl"
    with OutputFile.open(out, resume=True, retry_failed=True) as output:  # rewritten: a new inode at out.jsonl
        os.link(out, link)
        with pytest.raises(InputError, match="another process holds it"):
            OutputFile.open(link, resume=True)
        output.write(result(1))
    with OutputFile.open(link, resume=True) as output:  # released at close
        assert output.state.done == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "out.jsonl"]


def test_the_retry_failed_rewrite_happens_under_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out.jsonl"
    with OutputFile.open(out) as output:
        for i in range(6):
            output.write(result(i, ok=i % 2 == 0))
    attempts: list[str] = []
    replace = os.replace

    def replace_while_someone_tries(source: str, target: Path) -> None:
        for moment in ("before", "after"):
            if moment == "after":
                replace(source, target)
            try:
                OutputFile.open(out, resume=True, retry_failed=True).close()
                attempts.append(f"{moment}: got in")
            except InputError as refused:
                attempts.append(f"{moment}: {'refused' if 'in use' in str(refused) else refused}")

    monkeypatch.setattr(os, "replace", replace_while_someone_tries)
    with OutputFile.open(out, resume=True, retry_failed=True) as output:
        monkeypatch.undo()
        assert attempts == ["before: refused", "after: refused"]  # the new file is as locked as the old
        assert [r["id"] for r in lines_of(out)] == [0, 2, 4]
        assert output.state.failed_to_retry == 3
        with pytest.raises(InputError, match="in use"):
            OutputFile.open(out, resume=True)
        output.write(result(1))
    assert [r["id"] for r in lines_of(out)] == [0, 2, 4, 1]


def test_every_name_of_one_output_shares_its_lock_and_a_link_stays_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "runs" / "out.jsonl"
    real.parent.mkdir()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(real)
    with OutputFile.open(real) as output:
        output.write(result(0))
        output.write(result(1, ok=False))
    monkeypatch.chdir(real.parent)
    with OutputFile.open(link, resume=True, retry_failed=True) as output:
        for name in (Path("out.jsonl"), real, link):
            with pytest.raises(InputError, match="in use"):
                OutputFile.open(name, resume=True)
        output.write(result(1))
    assert link.is_symlink() and link.resolve() == real  # the rewrite replaced the file, not the link
    assert [(r["id"], r["error"]) for r in lines_of(real)] == [(0, None), (1, None)]


# --- never the input, never the cache -------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [{"overwrite": True}, {"resume": True}, {}])
def test_an_output_that_is_the_input_is_refused_and_the_input_untouched(tmp_path: Path, flags: dict[str, bool]) -> None:
    source = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "precious"}])
    before = source.read_bytes()
    same = tmp_path / "sub" / ".." / "prompts.jsonl"
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="is the input file too") as refused:
        OutputFile.open(same, guard={"input": source, "cache": tmp_path / "cache.sqlite"}, **flags)
    assert "--overwrite" not in str(refused.value)
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl", "sub"]  # no lock file either


def test_an_output_that_is_the_cache_is_refused_whether_or_not_it_exists_yet(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    linked = tmp_path / "link.sqlite"
    linked.symlink_to(cache)
    with pytest.raises(InputError, match="is the cache file too"):
        OutputFile.open(linked, overwrite=True, guard={"input": tmp_path / "in.jsonl", "cache": cache})
    cache.write_bytes(b"SQLite format 3\x00")
    with pytest.raises(InputError, match="is the cache file too"):
        OutputFile.open(linked, overwrite=True, guard={"input": None, "cache": str(cache)})
    OutputFile.open(tmp_path / "out.jsonl", guard={"cache": "redis://127.0.0.1:6379/0"}).close()  # no file
    assert cache.read_bytes() == b"SQLite format 3\x00"


# --- what is wrong with the place, said at open ---------------------------------------------------------------


def test_a_missing_folder_or_a_folder_as_output_is_one_input_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "out.jsonl"
    with pytest.raises(InputError, match=rf"{at(missing)}: its folder {at(missing.parent)} does not exist"):
        OutputFile.open(missing)
    with pytest.raises(InputError, match=rf"{at(tmp_path)} is a folder"):
        OutputFile.open(tmp_path, overwrite=True)
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(InputError, match="is not a folder"):
        OutputFile.open(afile / "out.jsonl")


@pytest.fixture
def read_only_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="llmgather-ro-"))  # under /tmp, reachable by another user
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder)


_OPEN_AS_NOBODY = """
import os, sys
from pathlib import Path
from llmgather.errors import InputError
from llmgather.io import OutputFile
if os.geteuid() == 0:  # root may write anywhere: be someone who may not
    os.setgid(65534)
    os.setuid(65534)
try:
    OutputFile.open(Path(sys.argv[1]))
except InputError as error:
    print(error)
"""


def test_a_read_only_folder_is_one_input_error_naming_the_file(read_only_folder: Path) -> None:
    out = read_only_folder / "out.jsonl"
    done = child(_OPEN_AS_NOBODY, str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{out}: cannot write in its folder {read_only_folder} (Permission denied)")
    assert list(read_only_folder.iterdir()) == []


# --- a failed write leaves whole lines ------------------------------------------------------------------------


_FILL = """
import resource, signal, sys
from pathlib import Path
from llmgather.errors import OutputError
from llmgather.io import OutputFile
from llmgather.types import Result
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() then says EFBIG, as a full disk says ENOSPC
output = OutputFile.open(Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
try:
    for i in range(100):
        output.write(Result(id=i, model="openai/fake", content="x" * 70))
except OutputError as error:
    print(output.written, error)
    try:
        output.write(Result(id=100, model="openai/fake", content="x"))
    except OutputError as again:
        print(again)
output.close()
"""


def test_a_write_past_a_size_limit_raises_output_error_and_leaves_no_half_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = child(_FILL, str(out))
    assert done.returncode == 0, done.stderr
    first, again = done.stdout.splitlines()
    written = first.split()[0]
    assert first == f"{written} {out}: could not write a result (File too large); every line written before is whole"
    assert again.startswith(f"{out}: could not write a result")  # later writes refused too, not tried
    assert 0 < len(lines_of(out)) == int(written) and out.stat().st_size < 1000
    with OutputFile.open(out, resume=True) as output:
        assert output.state.done == int(written) and output.state.torn_bytes == 0


def test_a_write_that_fails_midway_is_cut_back_to_the_last_whole_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    output = OutputFile.open(out)
    output.write(result(1))
    write = os.write
    calls = 0

    def half_then_full(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OutputError, match=rf"{at(out)}: could not write a result \(No space left on device\)"):
        output.write(result(2))
    monkeypatch.undo()
    output.close()
    assert [r["id"] for r in lines_of(out)] == [1] and output.written == 1


def test_an_output_removed_mid_run_is_an_output_error_not_silently_lost(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    output = OutputFile.open(folder / "out.jsonl")
    output.write(result(0))
    shutil.rmtree(folder)
    with pytest.raises(OutputError, match=r"out\.jsonl: could not write a result \(the output file was deleted"):
        for i in range(1, 1000):  # noticed within a few writes (it is checked every so often, not every line)
            output.write(result(i))
    output.close()
    assert output.written < 100
    lone = OutputFile.open(tmp_path / "lone.jsonl")
    lone.write(result(0))
    (tmp_path / "lone.jsonl").unlink()
    with pytest.raises(OutputError, match="deleted"):
        lone.close()  # or at the end, before the run reports success


_TO_STDOUT = """
from pathlib import Path
from llmgather.errors import OutputError
from llmgather.io import OutputFile
from llmgather.types import Result
output = OutputFile.open(None)
try:
    for i in range(100_000):
        output.write(Result(id=i, model="openai/fake", content="x" * 200))
except OutputError as error:
    print(f"stopped after {output.written}: {error}", file=__import__("sys").stderr)
output.close()
"""


def test_standard_output_full_is_one_output_error() -> None:
    with open("/dev/full", "w") as full:
        done = child(_TO_STDOUT, stdout=full)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "stopped after 0: <stdout>: could not write a result (No space left on device)"


def test_a_closed_pipe_on_standard_output_is_one_output_error_and_no_noise() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _TO_STDOUT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["id"] == 0
    process.stdout.close()  # `llmgather run ... -o - | head -1`
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert stderr.startswith("stopped after ") and stderr.count("\n") == 1, stderr
    assert "<stdout>: standard output was closed (broken pipe)" in stderr


def test_resume_needs_a_file() -> None:
    with pytest.raises(InputError, match="--resume needs the output file"):
        OutputFile.open(None, resume=True)
    with pytest.raises(InputError, match="not a regular file"):
        OutputFile.open(Path(os.devnull), resume=True)


def test_a_device_as_output_is_written_as_a_stream_neither_locked_nor_emptied() -> None:
    with OutputFile.open(Path(os.devnull)) as output:  # `-o /dev/null`: the summary without the results
        output.write(result(1))
        assert output.written == 1
    assert not Path(os.devnull).with_name(".null.lock").exists()


# --- resume: the input must still mean what the output answered ------------------------------------------------


def requests_in(path: Path) -> list[Request]:
    source = open_input(str(path))
    source.check()
    return list(source)


def test_a_line_removed_from_an_input_without_ids_is_caught_by_the_digest(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"question {i}"} for i in range(1, 6)])
    out = tmp_path / "out.jsonl"
    with OutputFile.open(out) as output:
        for request in requests_in(source)[:3]:  # the run stopped after three
            output.write(Result(id=request.id, model=MODEL, content="answer", digest=request.digest()))
    write_jsonl(source, [{"prompt": f"question {i}"} for i in range(2, 6)])  # the first line deleted
    now = requests_in(source)
    with OutputFile.open(out, resume=True) as output:
        # ids 1-3 now name questions 2-4: each answer would be filed under the wrong prompt; id 4 is new
        assert [output.state.mismatch(request, MODEL) for request in now] == [True, True, True, False]
        assert not output.state.mismatch(now[0], "openai/other")  # never answered by that model
        message = output.state.mismatch_message(now[1], MODEL)
    assert message.startswith(f"{source}:2: id 2 was answered in {out}:2 for a different request;")
    assert 'Give each line an "id"' in message


def test_an_edited_request_with_its_own_id_is_caught_and_legacy_lines_pass(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    asked = Request.from_prompt("a", "What is 2+2?", temperature=0)
    with OutputFile.open(out) as output:
        output.write(Result(id="a", model=MODEL, content="4", digest=asked.digest()))
        output.write(Result(id="old", model=MODEL, content="4"))  # written before results carried a digest
    edited = Request("a", asked.messages, {"temperature": 1}, source="in.jsonl:7")
    with OutputFile.open(out, resume=True) as output:
        state = output.state
        assert not state.mismatch(asked, MODEL)
        assert state.mismatch(edited, MODEL)
        assert not state.mismatch(Request.from_prompt("a", "What is 2+2?", temperature=0, stream=True), MODEL)
        assert not state.mismatch(Request.from_prompt("old", "anything at all"), MODEL)
        message = state.mismatch_message(edited, MODEL)
    assert message.startswith(f'in.jsonl:7: id "a" was answered in {out}:1 for a different request;')
    assert "Give each line" not in message


def test_a_resume_refused_for_a_changed_input_leaves_the_output_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    asked = [Request.from_prompt(i, f"question {i}", temperature=0) for i in range(3)]
    with OutputFile.open(out) as output:
        for request in asked:
            output.write(Result(id=request.id, model=MODEL, content="x", digest=request.digest()))
        output.write(result(3, ok=False))
    with out.open("ab") as file:
        file.write(b'{"id": 4, "model": "openai/fa')  # and a torn last line
    before = out.read_bytes()
    edited = Request.from_prompt(2, "question 2, edited", temperature=0)

    def refuse_changed(state: ResumeState) -> None:
        if state.mismatch(edited, MODEL):
            raise InputError(state.mismatch_message(edited, MODEL))

    with pytest.raises(InputError, match=rf"id 2 was answered in {at(out)}:3 for a different request"):
        OutputFile.open(out, resume=True, retry_failed=True, check=refuse_changed)
    assert out.read_bytes() == before  # neither the failed line dropped nor the torn one cut: refused means untouched
    with OutputFile.open(out, resume=True, retry_failed=True, check=lambda state: None) as output:  # lock released
        assert output.state.failed_to_retry == 1 and output.state.torn_bytes > 0
    assert [r["id"] for r in lines_of(out)] == [0, 1, 2]  # repaired once the check passed


@pytest.mark.parametrize("bad_id", [1.5, True, None, [1], {"n": 1}])
def test_an_output_line_whose_id_is_not_a_string_or_integer_is_a_line_error(tmp_path: Path, bad_id: object) -> None:
    out = write_jsonl(
        tmp_path / "out.jsonl",
        [result(1).to_dict(), {**result(2).to_dict(), "id": bad_id}, result(3).to_dict()],
    )
    with pytest.raises(InputError, match=rf"^{at(out)}:2: id must be a string or an integer, got "):
        OutputFile.open(out, resume=True)
    with pytest.raises(InputError, match=rf"^{at(out)}:2: id must be a string or an integer, got "):
        list(read_results(out))  # the Python API's reading back, too
    assert len(lines_of(out)) == 3


def test_reading_results_back_leaves_out_a_line_still_being_written(tmp_path: Path) -> None:
    out = write_jsonl(tmp_path / "out.jsonl", [result(1).to_dict()])
    with out.open("a") as file:
        file.write('{"id": 2, "model": "openai/fa')
    assert [r.id for r in read_results(out)] == [1]


def test_a_file_that_is_not_an_output_is_never_answered_with_overwrite(tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"prompt": "my only copy"}\n')
    with pytest.raises(InputError, match="is not an llmgather output") as resumed:
        OutputFile.open(notes, resume=True)
    assert "--overwrite" not in str(resumed.value)
    with pytest.raises(InputError, match="is not an llmgather output: give -o a new file"):
        OutputFile.open(notes)
    corrupt = write_jsonl(tmp_path / "out.jsonl", [result(1).to_dict()])
    with corrupt.open("a") as file:
        file.write("garbage\n")
    with pytest.raises(InputError, match=rf"{at(corrupt)}:2: not a result line") as mid:
        OutputFile.open(corrupt, resume=True)
    assert "--overwrite" not in str(mid.value)
    assert notes.read_text() == '{"prompt": "my only copy"}\n'
