"""The fake provider's Message Batches, driven by the official `anthropic` SDK with strict validation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import FakeServer, read_jsonl

from llmgather.fake import expected_content, prompt_text

KEY = "sk-ant-api03-fake-batch-key"
MODEL = "claude-fake-model"


def client(server: FakeServer, key: str = KEY) -> anthropic.Anthropic:
    root = server.url.removesuffix("/v1")
    return anthropic.Anthropic(base_url=root, api_key=key, max_retries=0, _strict_response_validation=True)


def request(custom_id: str, prompt: str, **params: Any) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 64, "system": "Be brief.", "messages": [{"role": "user", "content": prompt}]}
    return {"custom_id": custom_id, "params": {**body, **params}}


def expected(prompt: str) -> str:
    return expected_content(
        prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}])
    )


def wait_ended(claude: anthropic.Anthropic, batch_id: str, seen: list[Any] | None = None) -> Any:
    """The batch once ended, polling at most 10 s; each state read is kept in `seen`."""
    deadline = time.monotonic() + 10
    for _ in range(1000):
        batch = claude.messages.batches.retrieve(batch_id)
        if seen is not None:
            seen.append(batch)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.02)
    return batch


def results(claude: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {entry.custom_id: entry.result for entry in claude.messages.batches.results(batch_id)}


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    return [entry for entry in read_jsonl(path) if entry.get("event") == event]


def test_a_batch_ends_with_the_messages_the_online_endpoint_gives(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "fake.jsonl"
    server = fake_server("--api-key", KEY, "--batch-seconds", "0.5", "--log", str(log))
    claude = client(server)
    prompts = [f"question {i}" for i in range(5)]
    created = claude.messages.batches.create(requests=[request(f"q{i}", p) for i, p in enumerate(prompts)])  # type: ignore[misc]
    assert created.id.startswith("msgbatch_") and created.processing_status == "in_progress"
    assert created.results_url is None and created.ended_at is None and created.archived_at is None
    assert (created.expires_at - created.created_at).total_seconds() == 24 * 3600
    seen: list[Any] = []
    ended = wait_ended(claude, created.id, seen)

    # As documented: every request counts as processing until the whole batch has ended.
    assert all(b.request_counts.processing == 5 and b.request_counts.succeeded == 0 for b in seen[:-1])
    assert ended.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 5,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at
    assert ended.results_url == f"{server.url}/messages/batches/{created.id}/results"
    online = claude.messages.create(**request("x", prompts[2])["params"])
    got = results(claude, created.id)
    assert sorted(got) == [f"q{i}" for i in range(5)]
    assert all(result.type == "succeeded" for result in got.values())
    message = got["q2"].message
    assert message.content[0].text == online.content[0].text == expected(prompts[2])
    assert message.usage.input_tokens == online.usage.input_tokens and message.stop_reason == "end_turn"
    for custom_id, result in got.items():
        assert result.message.content[0].text == expected(prompts[int(custom_id[1:])])
    with pytest.raises(anthropic.AuthenticationError):
        client(server, "sk-ant-wrong").messages.batches.retrieve(created.id)
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve("msgbatch_nonesuch")

    stats = server.stats()
    assert stats["batches"] == {"created": 1, "by_state": {"ended": 1}, "requests": 5}
    assert stats["answered"] == 6 and stats["answered_twice"] == 1
    [born] = log_events(log, "batch_created")
    assert born["api"] == "anthropic" and born["batch"] == created.id and born["metadata"] == {}
    assert born["custom_ids"] == [f"q{i}" for i in range(5)]
    online_digests = [entry["prompt"] for entry in read_jsonl(log) if "prompt" in entry]
    assert born["prompts"][2] == online_digests[0]  # the digest the online log lines use
    [end] = log_events(log, "batch_ended")
    assert end["state"] == "ended" and end["counts"] == {"succeeded": 5} and end["t"] >= born["t"]


def test_a_cancel_mid_way_answers_what_was_done_and_cancels_the_rest(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    log = tmp_path / "fake.jsonl"
    server = fake_server("--batch-seconds", "2", "--log", str(log))
    claude = client(server)
    created = claude.messages.batches.create(requests=[request(f"r{i}", f"prompt {i}") for i in range(30)])  # type: ignore[misc]
    time.sleep(0.6)
    canceling = claude.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    with pytest.raises(anthropic.BadRequestError):  # no results until it has ended (the SDK would not even ask)
        claude.get(f"/v1/messages/batches/{created.id}/results", cast_to=object)
    ended = wait_ended(claude, created.id)

    counts = ended.request_counts
    assert ended.processing_status == "ended" and 0 < counts.succeeded < 30
    assert counts.canceled == 30 - counts.succeeded and counts.processing == counts.errored == counts.expired == 0
    got = results(claude, created.id)
    assert sum(result.type == "succeeded" for result in got.values()) == counts.succeeded
    assert sum(result.type == "canceled" for result in got.values()) == counts.canceled
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.batches.cancel(created.id)
    assert [entry["batch"] for entry in log_events(log, "batch_cancel")] == [created.id]
    [end] = log_events(log, "batch_ended")
    assert end["counts"] == {"canceled": counts.canceled, "succeeded": counts.succeeded}


def test_errors_are_transient_or_permanent_and_expiry_expires(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "0.5", "--batch-error-rate", "1", "--seed", "3")
    claude = client(server)
    bad_params = {"custom_id": "c", "params": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}}
    batch = claude.messages.batches.create(  # type: ignore[misc]
        requests=[request("a", "one"), request("b", "two [[batch_permanent]]"), bad_params]
    )
    assert wait_ended(claude, batch.id).request_counts.errored == 3
    got = results(claude, batch.id)
    assert all(result.type == "errored" and result.error.type == "error" for result in got.values())
    assert got["a"].error.error.type in ("api_error", "overloaded_error")
    assert got["b"].error.error.type == got["c"].error.error.type == "invalid_request_error"
    assert "max_tokens" in got["c"].error.error.message

    expiring = fake_server("--batch-seconds", "0.5", "--batch-expire-rate", "1")
    claude = client(expiring)
    batch = claude.messages.batches.create(requests=[request("a", "one"), request("b", "two")])  # type: ignore[misc]
    assert wait_ended(claude, batch.id).request_counts.expired == 2
    assert [result.type for result in results(claude, batch.id).values()] == ["expired", "expired"]

    clean = fake_server("--batch-seconds", "0.5", "--batch-error-rate", "0", "--seed", "3")
    claude = client(clean)
    batch = claude.messages.batches.create(requests=[request("a", "one")])  # type: ignore[misc]
    assert wait_ended(claude, batch.id).request_counts.succeeded == 1


@pytest.mark.parametrize(
    ("requests", "said"),
    [
        ([request(f"x{i}", "p") for i in range(3)], "at most 2 items"),
        ([request("has space", "p")], "custom_id"),
        ([request("y" * 65, "p")], "custom_id"),
        ([request("same", "p"), request("same", "q")], "Duplicate custom_id"),
        ([], "at least 1 item"),
    ],
)
def test_creation_refuses_a_batch_too_large_or_with_bad_custom_ids(
    fake_server: Callable[..., FakeServer], requests: list[dict[str, Any]], said: str
) -> None:
    server = fake_server("--batch-max-requests", "2")
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(server).messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert refused.value.status_code == 400 and said in refused.value.message
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert server.stats()["batches"]["created"] == 0


def test_listing_is_newest_first_and_pages_both_ways(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "0.5")
    claude = client(server)
    ids = [claude.messages.batches.create(requests=[request("a", f"batch {i}")]).id for i in range(3)]  # type: ignore[misc]
    first = claude.messages.batches.list(limit=2)
    assert [batch.id for batch in first.data] == [ids[2], ids[1]] and first.has_more
    assert first.first_id == ids[2] and first.last_id == ids[1]
    older = claude.messages.batches.list(limit=2, after_id=ids[1])
    assert [batch.id for batch in older.data] == [ids[0]] and older.has_more is False
    newer = claude.messages.batches.list(limit=1, before_id=ids[0])
    assert [batch.id for batch in newer.data] == [ids[1]] and newer.has_more
    assert [batch.id for batch in claude.messages.batches.list(limit=1)] == ids[::-1]  # the SDK's own paging
