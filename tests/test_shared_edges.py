"""`--shared` used badly, against real processes: URLs that are wrong in every way a person gets them wrong, and a
Redis that answers but refuses (a password asked for, a read-only replica, out of memory), at the start and mid-run.

Each must be one clear line and exit 2 at the start, with no password printed; mid-run, the run must finish alone.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import redis
from conftest import FakeServer, read_jsonl, reaped, run_cli, start_cli, write_jsonl
from redis_server import RedisServer

PASSWORD = "s3cret-never-shown"


def _input(tmp_path: Path, count: int) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(count)])


def _run(tmp_path: Path, server: FakeServer, url: str, *flags: str, count: int = 3) -> tuple[int, str, Path]:
    out = tmp_path / "out.jsonl"
    result = run_cli("run", str(_input(tmp_path, count)), "-o", str(out), "-m", "openai/fake",
                     "--api-base", server.url, "--shared", url, *flags)  # fmt: skip
    return result.returncode, result.stderr, out


def _refused_in_one_line(code: int, stderr: str, *words: str) -> None:
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert PASSWORD not in stderr, stderr
    for word in words:
        assert word in stderr, stderr


def _with_password(redis_server: RedisServer) -> None:
    redis.Redis(port=redis_server.port).config_set("requirepass", PASSWORD)


def test_a_database_that_is_not_a_number_is_refused_not_taken_as_0(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/abc"
    code, stderr, out = _run(tmp_path, server, url)
    _refused_in_one_line(code, stderr, "not a number")
    assert not out.exists() and server.stats()["requests"] == 0
    status = run_cli("shared", "status", url)
    _refused_in_one_line(status.returncode, status.stderr, "not a number")


def test_a_redis_asking_for_a_password_says_so_in_one_line(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    _with_password(redis_server)
    none = f"redis://127.0.0.1:{redis_server.port}/0"
    _refused_in_one_line(*_run(tmp_path, server, none)[:2], "asks for a password")
    wrong = f"redis://:wrong-{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    _refused_in_one_line(*_run(tmp_path, server, wrong)[:2], "refused the password", ":***@")
    status = run_cli("shared", "status", none)
    _refused_in_one_line(status.returncode, status.stderr, "asks for a password")
    right = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    code, stderr, out = _run(tmp_path, server, right)
    assert code == 0 and PASSWORD not in stderr and len(read_jsonl(out)) == 3, stderr
    status = run_cli("shared", "status", right)
    assert status.returncode == 0 and "3 requests granted" in status.stdout, status
    assert PASSWORD not in status.stdout + status.stderr


def test_shared_optional_does_not_run_past_a_missing_password(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    # Waiting would never mend it: pacing alone "until Redis answers" would pace alone for the whole run.
    _with_password(redis_server)
    none = f"redis://127.0.0.1:{redis_server.port}/0"
    code, stderr, _ = _run(tmp_path, server, none, "--shared-optional")
    _refused_in_one_line(code, stderr, "asks for a password")
    assert server.stats()["requests"] == 0


def test_a_missing_password_is_refused_before_the_output_without_advice_to_start_redis(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    _with_password(redis_server)
    none = f"redis://127.0.0.1:{redis_server.port}/0"
    for flags in ((), ("--shared-optional",)):
        code, stderr, out = _run(tmp_path, server, none, *flags)
        _refused_in_one_line(code, stderr, "asks for a password")
        assert "does not answer" not in stderr and "--shared-optional" not in stderr, stderr
        assert not out.exists()


def test_a_password_given_in_the_query_is_never_printed_either(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    _with_password(redis_server)
    wrong = f"redis://127.0.0.1:{redis_server.port}/0?password=wrong-{PASSWORD}"
    _refused_in_one_line(*_run(tmp_path, server, wrong)[:2], "refused the password", "password=***")
    status = run_cli("shared", "status", wrong)
    _refused_in_one_line(status.returncode, status.stderr, "password=***")


def test_a_port_where_something_else_listens_is_not_redis(tmp_path: Path, server: FakeServer) -> None:
    http = server.url.removesuffix("/v1").replace("http://", "redis://") + "/0"
    _refused_in_one_line(*_run(tmp_path, server, http)[:2], "does not speak Redis")
    # Nor is it an outage to wait out alone: no Redis will ever answer there.
    _refused_in_one_line(*_run(tmp_path, server, http, "--shared-optional")[:2], "does not speak Redis")


def test_a_database_out_of_range_is_refused_even_with_shared_optional(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/99"
    for flags in ((), ("--shared-optional",)):
        _refused_in_one_line(*_run(tmp_path, server, url, *flags)[:2], "no such database")
    assert server.stats()["requests"] == 0


def test_a_read_only_replica_is_refused_at_the_start(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    # A replica of nothing that answers is read-only all the same: it answers PING, and refuses every admission.
    redis.Redis(port=redis_server.port).replicaof("127.0.0.1", "1")
    code, stderr, out = _run(tmp_path, server, redis_server.url)
    _refused_in_one_line(code, stderr, "read-only replica")
    assert not out.exists() and server.stats()["requests"] == 0


def test_a_read_only_replica_with_shared_optional_paces_alone_and_says_so_once(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    redis.Redis(port=redis_server.port).replicaof("127.0.0.1", "1")
    code, stderr, out = _run(tmp_path, server, redis_server.url, "--shared-optional", "--rpm", "6000", count=200)
    assert code == 0, stderr
    assert [row["error"] for row in read_jsonl(out)] == [None] * 200
    assert stderr.count("stopped answering") == 1, stderr  # not lost and found again every quarter second
    assert "answers again: pacing together" not in stderr, stderr


def test_redis_out_of_memory_mid_run_is_an_outage_not_a_crash(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    count = 400
    out = tmp_path / "out.jsonl"
    process = start_cli("run", str(_input(tmp_path, count)), "-o", str(out), "-m", "openai/fake",
                        "--api-base", server.url, "--rpm", "6000", "--shared", redis_server.url)  # fmt: skip
    admin = redis.Redis(port=redis_server.port)
    with reaped(process):
        give_up = time.monotonic() + 60
        while server.stats()["answered"] < 50 and time.monotonic() < give_up and process.poll() is None:
            time.sleep(0.05)
        # Every write refused with an error reply (the connection itself stays fine), for about a second.
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        time.sleep(1.2)
        admin.config_set("maxmemory", "0")
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert sorted(row["id"] for row in read_jsonl(out)) == sorted(f"r{i}" for i in range(count))
    assert stderr.count("stopped answering") == 1, stderr[-3000:]
    assert stderr.count("answers again: pacing together") == 1, stderr[-3000:]
    assert "out of memory" in stderr, stderr[-3000:]


def test_a_malformed_url_never_prints_its_password(tmp_path: Path, server: FakeServer) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:99999/0"
    _refused_in_one_line(*_run(tmp_path, server, url)[:2], "--shared")
    status = run_cli("shared", "status", url)
    _refused_in_one_line(status.returncode, status.stderr)


def test_ctrl_c_mid_run_never_prints_the_password_in_the_resume_command(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    _with_password(redis_server)
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_server.port}/0"
    process = start_cli("run", str(_input(tmp_path, 400)), "-o", str(tmp_path / "out.jsonl"), "-m", "openai/fake",
                        "--api-base", server.url, "--rpm", "3000", "--shared", url)  # fmt: skip
    with reaped(process):
        give_up = time.monotonic() + 60
        while server.stats()["answered"] < 20 and time.monotonic() < give_up and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and PASSWORD not in stderr, stderr


def test_a_redis_that_answers_a_probe_but_refuses_every_ask_is_lost_once_not_four_times_a_second(
    tmp_path: Path, server: FakeServer, redis_server: RedisServer
) -> None:
    # A key of the wrong type where the quota's members go (another tool, another version): every admission is
    # an error reply, while the probe that looks for the store again succeeds.
    from llmgather.limits.shared_redis import MEMBERS_PREFIX
    from llmgather.limits.shared_state import QuotaId

    admin = redis.Redis(port=redis_server.port)
    in_the_way = MEMBERS_PREFIX + QuotaId(server.url, "openai/fake").key
    admin.set(in_the_way, "not a sorted set")
    count = 400
    out = tmp_path / "out.jsonl"
    process = start_cli("run", str(_input(tmp_path, count)), "-o", str(out), "-m", "openai/fake",
                        "--api-base", server.url, "--rpm", "6000", "--shared", redis_server.url)  # fmt: skip
    with reaped(process):
        give_up = time.monotonic() + 60
        while server.stats()["answered"] < 100 and time.monotonic() < give_up and process.poll() is None:
            time.sleep(0.05)
        admin.delete(in_the_way)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert len(read_jsonl(out)) == count
    assert stderr.count("stopped answering") == 1, stderr[-3000:]
    assert stderr.count("answers again: pacing together") == 1, stderr[-3000:]
