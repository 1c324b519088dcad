"""The response cache never costs an answer: bad files are refused up front, trouble mid-run turns it off.

Every test works on real SQLite files; the lock comes from a second process, as another run would hold it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, release, run_cli, write_jsonl

from llmgather.cache import ResponseCache, cache_key
from llmgather.errors import InputError
from llmgather.types import Request, Result, Usage

OLD_SCHEMA = """CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT NOT NULL, created REAL NOT NULL,
    content TEXT, usage TEXT, finish_reason TEXT)"""


def ask(n: int, **params: object) -> Request:
    return Request.from_prompt(n, f"question {n}", **params)


def answer(n: int) -> Result:
    return Result(id=n, model="m", content=f"answer {n}", usage=Usage(3, 2, 5), finish_reason="stop")


def fill(path: Path, n: int) -> None:
    with ResponseCache(path) as cache:
        for i in range(n):
            cache.put("m", "e", ask(i, temperature=0), answer(i))


def finishes(call: Callable[[], object], within_s: float = 5.0) -> list[object]:
    """Run `call` in a thread; assert it came back (a stalled SQLite call would not), and return its value."""
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(call()), daemon=True)
    thread.start()
    thread.join(within_s)
    assert not thread.is_alive(), f"still blocked after {within_s} s"
    return box


# --- refused when opened: one line naming the file -------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a cache\n" * 20)
    with pytest.raises(InputError) as caught:
        ResponseCache(path)
    message = str(caught.value)
    assert str(path) in message and "not an SQLite database" in message and "\n" not in message
    assert path.read_text().startswith("these are my notes")  # left as it was


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_corrupt_cache_is_refused_naming_it(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "cache.sqlite"
    fill(path, 300)
    data = path.read_bytes()
    assert len(data) > 8 * 4096
    kept = data[: len(data) // 2] if damage == "truncated" else data[:4096] + bytes(len(data) - 4096)
    path.write_bytes(kept)
    with pytest.raises(InputError) as caught:
        ResponseCache(path)
    message = str(caught.value)
    assert str(path) in message and "corrupt" in message and "\n" not in message


def test_a_cache_in_a_missing_folder_is_refused_and_no_folder_is_made(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "cache.sqlite"
    with pytest.raises(InputError) as caught:
        ResponseCache(path)
    assert str(path) in str(caught.value) and "does not exist" in str(caught.value)
    assert not (tmp_path / "no").exists()


def open_unprivileged(path: Path) -> subprocess.CompletedProcess[str]:
    """Open the cache in a child process that a read-only folder binds: root's child gives up the
    capabilities that let it write anywhere."""
    code = (
        "import sys\nfrom llmgather.cache import ResponseCache\nfrom llmgather.errors import InputError\n"
        "try:\n    ResponseCache(sys.argv[1]).close()\n"
        "except InputError as exc:\n    print(exc)\n    sys.exit(2)\n"
    )
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv writes into read-only folders")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
    return subprocess.run([*prefix, sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "existing-file"])
def test_a_cache_in_a_read_only_folder_is_refused_naming_it(tmp_path: Path, existing: bool) -> None:
    folder = tmp_path / "read-only"
    folder.mkdir()
    path = folder / "cache.sqlite"
    if existing:
        fill(path, 3)
    folder.chmod(0o555)
    try:
        opened = open_unprivileged(path)
    finally:
        folder.chmod(0o755)
    assert opened.returncode == 2, opened.stderr
    assert str(path) in opened.stdout and opened.stdout.count("\n") == 1 and "Traceback" not in opened.stderr
    assert not (folder / "cache.sqlite-wal").exists()


# --- trouble mid-run: one warning, and get/put go on as no-ops ------------------------------------------


def test_corruption_mid_run_turns_the_cache_off_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    fill(path, 300)
    said: list[str] = []
    cache = ResponseCache(path, on_warning=said.append, flush_every=10)
    assert cache.get("m", "e", ask(1, temperature=0)) is not None
    size = path.stat().st_size
    with path.open("r+b") as f:  # every page but the first overwritten
        f.seek(4096)
        f.write(b"\xff" * (size - 4096))
    # Another run writes to the file, so this one's page cache is stale and it reads the damage.
    sqlite3.connect(path, isolation_level=None).execute("CREATE TABLE elsewhere (x)")

    for i in range(32):
        assert cache.get("m", "e", ask(100 + i)) is None
        cache.put("m", "e", ask(1000 + i), answer(1000 + i))
    cache.close()
    assert len(said) == 1 and str(path) in said[0] and "corrupt" in said[0]
    assert cache.disabled is not None and "corrupt" in cache.disabled
    assert cache.stored == 0


def test_the_default_warning_is_a_python_warning_given_once(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    fill(path, 300)
    cache = ResponseCache(path)
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(bytes(path.stat().st_size - 4096))
    sqlite3.connect(path, isolation_level=None).execute("CREATE TABLE elsewhere (x)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(10):
            assert cache.get("m", "e", ask(i, temperature=0)) is None
        cache.close()
    assert [str(w.message).count(str(path)) for w in caught] == [1]


def test_a_lock_held_by_another_process_never_stalls_get_or_put(
    tmp_path: Path, locker: Callable[[Path], subprocess.Popen[str]]
) -> None:
    path = tmp_path / "cache.sqlite"
    fill(path, 5)
    cache = ResponseCache(path)
    holder = locker(path)
    # Temperature 0, so that the code before this change stored them too (and waited 30 s on the lock).
    requests = [ask(i, temperature=0) for i in range(100, 400)]

    def puts() -> None:
        for i, request in enumerate(requests):  # three times a flush's worth: each flush meets the lock
            cache.put("m", "e", request, answer(i))

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        finishes(puts)
        assert finishes(lambda: cache.get("m", "e", ask(999, temperature=0))) == [None]  # a miss, at once
        assert cache.get("m", "e", requests[-1]) is not None  # buffered answers still serve this run
        assert cache.stored == 0 and cache.disabled is None

        release(holder)  # the lock lifts: what waited is stored at the next flush
        cache.close()
    assert cache.stored == 300 and [str(w.message) for w in said] == []
    with ResponseCache(path) as again:
        assert all(again.get("m", "e", r) is not None for r in [ask(0, temperature=0), requests[0], requests[-1]])


def test_a_lock_that_outlasts_the_run_is_given_a_few_seconds_at_close_then_dropped(
    tmp_path: Path, locker: Callable[[Path], subprocess.Popen[str]]
) -> None:
    path = tmp_path / "cache.sqlite"
    said: list[str] = []
    cache = ResponseCache(path, on_warning=said.append, close_timeout_s=0.2)
    holder = locker(path)
    cache.put("m", "e", ask(1), answer(1))
    finishes(cache.close)
    assert len(said) == 1 and "locked" in said[0] and "1 answers were not stored" in said[0]
    assert cache.stored == 0 and cache.disabled is not None
    release(holder)


# --- what is cached, and under which key ---------------------------------------------------------------


def test_a_request_without_temperature_is_cached_by_default(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        cache.put("m", "e", ask(1), answer(1))
        cache.put("m", "e", ask(2, temperature=0.7), answer(2))
    with ResponseCache(path) as cache:
        hit = cache.get("m", "e", ask(1))
        assert hit is not None and hit.cached and hit.content == "answer 1" and hit.usage == Usage(3, 2, 5)
        assert cache.get("m", "e", ask(2, temperature=0.7)) is not None
        assert cache.get("m", "e", ask(3)) is None
        assert (cache.hits, cache.misses, cache.skipped) == (2, 1, 0)


def test_deterministic_only_keeps_to_temperature_zero(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path, deterministic_only=True) as cache:
        for request in [ask(1), ask(2, temperature=0.7), ask(3, temperature=0)]:
            assert cache.get("m", "e", request) is None
            cache.put("m", "e", request, answer(int(request.id)))
        assert (cache.misses, cache.skipped) == (1, 2)
    assert cache.stored == 1
    with ResponseCache(path) as everything:
        assert everything.get("m", "e", ask(3, temperature=0)) is not None
        assert everything.get("m", "e", ask(1)) is None


def test_writes_are_batched_and_shared_with_other_runs(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache(path, flush_every=3, flush_interval_s=3600)

    def on_disk() -> int:
        return int(sqlite3.connect(path).execute("SELECT count(*) FROM responses").fetchone()[0])

    cache.put("m", "e", ask(1), answer(1))
    cache.put("m", "e", ask(2), answer(2))
    assert on_disk() == 0 and cache.stored == 0
    cache.put("m", "e", ask(3), answer(3))
    assert on_disk() == 3 and cache.stored == 3
    cache.put("m", "e", ask(4), answer(4))
    cache.close()
    assert on_disk() == 4 and cache.stored == 4


def test_the_key_carries_a_version_tag_and_depends_on_what_changes_the_answer() -> None:
    key = cache_key("m", "e", ask(1, temperature=0))
    assert key.startswith("v2:") and len(key) == 3 + 64
    assert cache_key("m", "e", ask(1, temperature=0, stream=True, user="u")) == key  # delivery, not answer
    assert cache_key("m", "e", Request.from_prompt("other id", "question 1", temperature=0)) == key
    changed = [cache_key("m2", "e", ask(1, temperature=0)), cache_key("m", "e2", ask(1, temperature=0))]
    changed += [cache_key("m", "e", ask(1, temperature=0.5)), cache_key("m", "e", ask(2, temperature=0))]
    assert key not in changed and len(set(changed)) == 4


def old_key(model: str, endpoint: str, request: Request) -> str:
    """The key as the code before the version tag spelled it."""
    canonical = json.dumps(
        {"model": model, "endpoint": endpoint, "messages": request.messages, "params": request.params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_a_cache_from_the_old_code_migrates_and_never_serves_an_unversioned_key(tmp_path: Path) -> None:
    from llmgather.cache import MIGRATIONS  # imported here: the code before it still runs the other tests

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(OLD_SCHEMA)
    request = ask(1, temperature=0)
    with db:
        db.execute("INSERT INTO responses VALUES (?, 'm', 0, 'stale', NULL, 'stop')", (old_key("m", "e", request),))
    db.close()

    with ResponseCache(path) as cache:
        assert cache.get("m", "e", request) is None  # the old key is never read as an answer
        cache.put("m", "e", request, answer(1))
    with ResponseCache(path) as cache:
        hit = cache.get("m", "e", request)
        assert hit is not None and hit.content == "answer 1"
        assert cache.stats().entries == 1  # the unreachable old row is gone
    db = sqlite3.connect(path)
    applied = [name for (name,) in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert applied == [name for name, _ in MIGRATIONS] and len(applied) >= 2
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_new_cache_file_is_private_and_stats_and_clear_work(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        for i in range(5):
            cache.put("m" if i < 3 else "n", "e", ask(i), answer(i))
        stats = cache.stats()  # counts what is still buffered too
        assert (stats.entries, stats.by_model) == (5, {"m": 3, "n": 2})
        assert cache.clear("n") == 2 and cache.stats().entries == 3
    assert path.stat().st_mode & 0o777 == 0o600


# --- end to end: a second run through the CLI sends nothing --------------------------------------------


def test_a_second_run_through_the_cli_sends_nothing(server: FakeServer, tmp_path: Path) -> None:
    records = [{"id": i, "prompt": f"cached {i}"} for i in range(10)]  # temperature unset, as in the README
    source = write_jsonl(tmp_path / "in.jsonl", records)
    cache = tmp_path / "cache.sqlite"
    for n in (1, 2):
        out = tmp_path / f"{n}.jsonl"
        done = run_cli(
            "run", str(source), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, "--cache", str(cache)
        )
        assert done.returncode == 0, done.stderr
        assert server.stats()["requests"] == 10
    rows = read_jsonl(tmp_path / "2.jsonl")
    assert len(rows) == 10 and all(row["cached"] is True and row["cost_usd"] == 0 for row in rows)
