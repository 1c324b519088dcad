"""The fake provider's OpenAI Files and Batches APIs, driven by the official `openai` SDK with strict validation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import FakeServer, read_jsonl

from llmgather.fake import expected_content, prompt_digest, prompt_text

ENDPOINT = "/v1/chat/completions"
ENDED = ("completed", "failed", "expired", "cancelled")


def client(server: FakeServer, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0, _strict_response_validation=True)


def messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]


def line(custom_id: str, prompt: str, **changes: Any) -> dict[str, Any]:
    body = {"model": "fake-model", "messages": messages(prompt)}
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body, **changes}


def submit(oai: openai.OpenAI, lines: list[Any], metadata: dict[str, str] | None = None) -> Any:
    raw = "".join((text if isinstance(text, str) else json.dumps(text)) + "\n" for text in lines)
    uploaded = oai.files.create(file=("input.jsonl", raw.encode()), purpose="batch")
    return oai.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata)


def wait_ended(oai: openai.OpenAI, batch_id: str, seen: list[Any] | None = None) -> Any:
    """The batch once ended, polling at most 10 s; each state read is kept in `seen`."""
    deadline = time.monotonic() + 10
    for _ in range(1000):
        batch = oai.batches.retrieve(batch_id)
        if seen is not None:
            seen.append(batch)
        if batch.status in ENDED or time.monotonic() > deadline:
            return batch
        time.sleep(0.02)
    return batch


def file_lines(oai: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(text) for text in oai.files.content(file_id).text.splitlines()]


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    return [entry for entry in read_jsonl(path) if entry.get("event") == event]


def test_a_batch_runs_through_its_states_to_the_online_answers(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "fake.jsonl"
    server = fake_server("--batch-seconds", "1", "--log", str(log))
    oai = client(server)
    prompts = [f"question {i}" for i in range(20)]
    created = submit(oai, [line(f"q{i}", p) for i, p in enumerate(prompts)], metadata={"run": "r1", "part": "0"})
    assert created.status == "validating" and created.request_counts.total == 20
    assert created.metadata == {"run": "r1", "part": "0"} and created.expires_at == created.created_at + 86400
    seen: list[Any] = []
    ended = wait_ended(oai, created.id, seen)

    assert ended.status == "completed" and ended.error_file_id is None and ended.errors is None
    assert ended.request_counts.completed == 20 and ended.request_counts.failed == 0
    assert ended.in_progress_at and ended.finalizing_at and ended.completed_at
    states = [batch.status for batch in seen]
    assert states == sorted(states, key=["validating", "in_progress", "finalizing", "completed"].index)
    counts = [batch.request_counts.completed for batch in seen]
    assert counts == sorted(counts) and any(0 < n < 20 for n in counts)  # they grow as requests complete
    online = oai.chat.completions.create(model="fake-model", messages=messages(prompts[3]))  # type: ignore[arg-type]
    outputs = {entry["custom_id"]: entry for entry in file_lines(oai, ended.output_file_id)}
    assert sorted(outputs) == sorted(f"q{i}" for i in range(20))
    third = outputs["q3"]
    assert third["error"] is None and third["response"]["status_code"] == 200 and third["id"].startswith("batch_req_")
    body = openai.types.chat.ChatCompletion.model_validate(third["response"]["body"])
    assert body.choices[0].message.content == online.choices[0].message.content
    assert body.choices[0].message.content == expected_content(prompt_text(messages(prompts[3])), 16)
    assert body.usage == online.usage and ended.usage is not None and ended.usage.output_tokens == 20 * 16
    for i, entry in outputs.items():
        content = entry["response"]["body"]["choices"][0]["message"]["content"]
        assert content == expected_content(prompt_text(messages(prompts[int(i[1:])])), 16)

    stats = server.stats()
    assert stats["batches"] == {"created": 1, "by_state": {"completed": 1}, "requests": 20}
    assert stats["answered"] == 21 and stats["answered_twice"] == 1  # q3 was also asked online
    [born] = log_events(log, "batch_created")
    assert born["api"] == "openai" and born["batch"] == created.id and born["metadata"] == {"run": "r1", "part": "0"}
    assert born["custom_ids"] == [f"q{i}" for i in range(20)]
    assert born["prompts"] == [prompt_digest(prompt_text(messages(p))) for p in prompts]
    [end] = log_events(log, "batch_ended")
    assert end["batch"] == created.id and end["state"] == "completed" and len(end["succeeded"]) == 20
    assert end["t"] >= born["t"]


def test_files_can_be_read_back_and_deleted_and_the_key_is_checked(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--api-key", "sk-right")
    oai = client(server, "sk-right")
    uploaded = oai.files.create(file=("input.jsonl", b'{"a": 1}\n'), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.bytes == 9 and uploaded.filename == "input.jsonl"
    assert oai.files.retrieve(uploaded.id).purpose == "batch"
    assert oai.files.content(uploaded.id).content == b'{"a": 1}\n'
    assert oai.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_nonesuch")
    with pytest.raises(openai.AuthenticationError):
        client(server, "sk-wrong").batches.list()


def test_a_cancel_mid_way_keeps_the_answers_done_and_cancels_the_rest(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "fake.jsonl"
    server = fake_server("--batch-seconds", "3", "--log", str(log))
    oai = client(server)
    created = submit(oai, [line(f"r{i}", f"prompt {i}") for i in range(30)])
    for _ in range(500):  # until some are done, at most 10 s
        if oai.batches.retrieve(created.id).request_counts.completed > 0:
            break
        time.sleep(0.02)
    cancelling = oai.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    ended = wait_ended(oai, created.id)

    done = ended.request_counts.completed
    assert ended.status == "cancelled" and ended.cancelled_at is not None and 0 < done < 30
    assert ended.completed_at is None and ended.request_counts.failed == 0
    answered = file_lines(oai, ended.output_file_id)
    unrun = file_lines(oai, ended.error_file_id)
    assert len(answered) == done and len(unrun) == 30 - done
    assert {entry["custom_id"] for entry in answered} | {entry["custom_id"] for entry in unrun} == {
        f"r{i}" for i in range(30)
    }
    assert all(entry["response"] is None and entry["error"]["code"] == "batch_cancelled" for entry in unrun)
    with pytest.raises(openai.BadRequestError):
        oai.batches.cancel(created.id)
    assert [entry["batch"] for entry in log_events(log, "batch_cancel")] == [created.id]
    [end] = log_events(log, "batch_ended")
    assert end["state"] == "cancelled" and end["counts"] == {"canceled": 30 - done, "succeeded": done}


def test_transient_and_permanent_errors_go_to_the_error_file(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "0.5", "--batch-error-rate", "1", "--seed", "7")
    oai = client(server)
    ended = wait_ended(oai, submit(oai, [line("a", "one"), line("b", "two [[batch_permanent]]")]).id)
    assert ended.status == "completed" and ended.output_file_id is None
    assert ended.request_counts.completed == 0 and ended.request_counts.failed == 2
    errors = {entry["custom_id"]: entry for entry in file_lines(oai, ended.error_file_id)}
    assert errors["a"]["response"]["status_code"] == 500 and errors["b"]["response"]["status_code"] == 400
    assert errors["a"]["response"]["body"]["error"]["type"] == "server_error"
    assert errors["b"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert all(entry["error"] is None for entry in errors.values())

    clean = fake_server("--batch-seconds", "0.5", "--batch-error-rate", "0", "--seed", "7")
    fine = wait_ended(client(clean), submit(client(clean), [line("a", "one")]).id)
    assert fine.request_counts.completed == 1 and fine.error_file_id is None


def test_expired_requests_end_the_batch_expired_with_batch_expired_lines(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server("--batch-seconds", "0.5", "--batch-expire-rate", "1")
    oai = client(server)
    ended = wait_ended(oai, submit(oai, [line("a", "one"), line("b", "two")]).id)
    assert ended.status == "expired" and ended.expired_at is not None and ended.completed_at is None
    assert ended.output_file_id is None and ended.request_counts.completed == 0
    errors = file_lines(oai, ended.error_file_id)
    assert [entry["custom_id"] for entry in errors] == ["a", "b"]
    assert all(entry["response"] is None and entry["error"]["code"] == "batch_expired" for entry in errors)


def test_validation_names_each_bad_line_and_the_batch_fails(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "0.5")
    oai = client(server)
    lines: list[Any] = [
        line("a", "fine"),
        "{not json",
        line("a", "the same custom_id again"),
        line("c", "wrong url", url="/v1/embeddings"),
        line("d", "placed here [[batch_invalid]]"),
        {"custom_id": "e", "method": "POST", "url": ENDPOINT},
    ]
    created = submit(oai, lines)
    assert created.status == "validating" and created.errors is None
    ended = wait_ended(oai, created.id)
    assert ended.status == "failed" and ended.failed_at is not None and ended.in_progress_at is None
    assert ended.output_file_id is None and ended.error_file_id is None
    assert ended.errors is not None and ended.errors.object == "list"
    found = [(error.line, error.code, error.param) for error in ended.errors.data or []]
    assert found == [
        (2, "invalid_json_line", None),
        (3, "duplicate_custom_id", "custom_id"),
        (4, "mismatched_endpoint", "url"),
        (5, "invalid_request", "body"),
        (6, "missing_required_parameter", "body"),
    ]
    assert server.stats()["batches"]["by_state"] == {"failed": 1}


def test_a_batch_over_the_size_limit_fails_validation(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "0.5", "--batch-max-requests", "2")
    oai = client(server)
    ended = wait_ended(oai, submit(oai, [line(f"x{i}", f"p{i}") for i in range(3)]).id)
    assert ended.status == "failed" and ended.errors is not None and ended.errors.data
    assert ended.errors.data[0].code == "batch_too_large"
    assert wait_ended(oai, submit(oai, [line("y0", "p0"), line("y1", "p1")]).id).status == "completed"


def test_the_enqueued_token_limit_fails_a_batch_until_earlier_ones_end(fake_server: Callable[..., FakeServer]) -> None:
    prompt = "x" * 400  # 100 tokens, and 2 for the system prompt
    server = fake_server("--batch-seconds", "1", "--batch-enqueued-tokens", "250")
    oai = client(server)
    first = submit(oai, [line("a", prompt), line("b", prompt + "b")])
    second = wait_ended(oai, submit(oai, [line("c", prompt + "c")]).id)
    assert second.status == "failed" and second.errors is not None and second.errors.data
    refusal = second.errors.data[0]
    assert refusal.code == "token_limit_exceeded" and refusal.line is None and "250" in (refusal.message or "")
    assert wait_ended(oai, first.id).status == "completed"
    assert wait_ended(oai, submit(oai, [line("c", prompt + "c")]).id).status == "completed"


def test_listing_is_newest_first_and_pages_with_after(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "0.5")
    oai = client(server)
    ids = [submit(oai, [line("a", f"batch {i}")]).id for i in range(3)]
    first = oai.batches.list(limit=2)
    assert [batch.id for batch in first.data] == [ids[2], ids[1]] and first.has_more
    extra = first.model_extra or {}
    assert extra["first_id"] == ids[2] and extra["last_id"] == ids[1] and extra["object"] == "list"
    rest = oai.batches.list(limit=2, after=ids[1])
    assert [batch.id for batch in rest.data] == [ids[0]] and rest.has_more is False
    assert [batch.id for batch in oai.batches.list(limit=1)] == ids[::-1]  # the SDK's own paging
    with pytest.raises(openai.BadRequestError):
        oai.batches.list(limit=0)
