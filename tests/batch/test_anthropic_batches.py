"""Anthropic's Message Batches through `AnthropicBatches`: the requests it sends, the states and results it
reads back. Edge cases against an in-process server that says exactly what a test needs; whole batches against
the fake provider process at the end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import FakeServer

from llmgather.backends.anthropic import messages_body, parse_message
from llmgather.batch.anthropic import AnthropicBatches
from llmgather.batch.api import BatchItem, BatchState, BatchStatus, EndedAs
from llmgather.errors import (
    AuthenticationError,
    PermanentError,
    QuotaExceededError,
    RateLimitError,
    RequestError,
    ServerError,
)
from llmgather.fake.common import expected_content
from llmgather.types import Request

KEY = "sk-ant-api03-secret-key-for-batch-tests-only"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def run_against(routes: dict[tuple[str, str], Handler], test: Callable[[AnthropicBatches], Awaitable[Any]]) -> Any:
    """`test` with a client of a server answering `routes` ((method, path) -> handler)."""

    async def go() -> Any:
        app = web.Application()
        for (method, path), handler in routes.items():
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = AnthropicBatches("anthropic/claude-x", api_base=f"http://127.0.0.1:{port}/v1", api_key=KEY)
        try:
            return await test(client)
        finally:
            await client.aclose()
            await runner.cleanup()

    return asyncio.run(go())


def answering(body: Any, status: int = 200) -> Handler:
    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handle


def message_batch(status: str = "in_progress", **fields: Any) -> dict[str, Any]:
    counts = {"processing": 0, "succeeded": 3, "errored": 2, "canceled": 0, "expired": 0}
    return {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {**counts, **fields.pop("counts", {})},
        "ended_at": None,
        "created_at": "2024-09-24T18:37:24.100435Z",
        "expires_at": "2024-09-25T18:37:24.100435Z",
        "cancel_initiated_at": None,
        "results_url": None,
        **fields,
    }


async def status_of(client: AnthropicBatches) -> Any:
    return await client.status("msgbatch_1")


def test_a_request_is_the_online_messages_body_without_streaming() -> None:
    client = AnthropicBatches("anthropic/claude-x", api_key=KEY)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\nthere"}]
    line = client.encode("c-1", Request(id=1, messages=messages, params={"stream": True, "temperature": 0}))
    assert b"\n" not in line
    online = messages_body("claude-x", Request(id=1, messages=messages, params={"temperature": 0}))
    assert json.loads(line) == {"custom_id": "c-1", "params": online}
    with pytest.raises(PermanentError):  # as online: refused for that request, never sent mangled
        client.encode("c-2", Request.from_prompt(1, "x", n=2))


def test_submit_sends_the_lines_as_requests_with_the_key_and_version() -> None:
    seen: dict[str, Any] = {}

    async def create(request: web.Request) -> web.StreamResponse:
        seen["headers"], seen["body"] = request.headers, await request.json()
        return web.json_response(message_batch())

    client = AnthropicBatches("anthropic/claude-x", api_key=KEY)
    lines = [client.encode(f"c{i}", Request.from_prompt(i, f"q{i}")) for i in range(3)]

    async def test(client: AnthropicBatches) -> str:
        return await client.submit(lines, {"run": "r1"})

    assert run_against({("POST", "/v1/messages/batches"): create}, test) == "msgbatch_1"
    assert seen["body"] == {"requests": [json.loads(line) for line in lines]}
    assert seen["headers"]["x-api-key"] == KEY and seen["headers"]["anthropic-version"] == "2023-06-01"


def test_a_refused_key_stops_and_is_never_quoted() -> None:
    refused = {"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"}}
    with pytest.raises(AuthenticationError) as caught:
        run_against({("GET", "/v1/messages/batches/msgbatch_1"): answering(refused, 401)}, status_of)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "fields", "state", "ended_as"),
    [
        ("in_progress", {}, BatchState.IN_PROGRESS, None),
        ("canceling", {"cancel_initiated_at": "2024-09-24T18:40:00Z"}, BatchState.FINALIZING, None),
        ("ended", {}, BatchState.ENDED, EndedAs.COMPLETED),
        ("ended", {"cancel_initiated_at": "2024-09-24T18:40:00Z"}, BatchState.ENDED, EndedAs.CANCELLED),
        ("ended", {"counts": {"succeeded": 0, "errored": 0, "expired": 5}}, BatchState.ENDED, EndedAs.EXPIRED),
        ("ended", {"counts": {"succeeded": 0, "expired": 3}}, BatchState.ENDED, EndedAs.COMPLETED),
    ],
)
def test_states_map_onto_four(status: str, fields: dict[str, Any], state: BatchState, ended_as: EndedAs) -> None:
    found = run_against(
        {("GET", "/v1/messages/batches/msgbatch_1"): answering(message_batch(status, **fields))}, status_of
    )
    assert (found.state, found.ended_as, found.total) == (state, ended_as, 5)
    assert found.created_at == pytest.approx(1727203044.100435) and found.tags == {}


def test_counts_add_up_all_five() -> None:
    counts = {"processing": 4, "succeeded": 3, "errored": 2, "canceled": 1, "expired": 1}
    found = run_against(
        {("GET", "/v1/messages/batches/msgbatch_1"): answering(message_batch(counts=counts))}, status_of
    )
    assert (found.total, found.succeeded, found.failed, found.done) == (11, 3, 2, 5)


@pytest.mark.parametrize(
    "body", [message_batch("paused"), message_batch(created_at="yesterday"), {"processing_status": "ended"}]
)
def test_a_malformed_batch_is_a_server_error(body: Any) -> None:
    with pytest.raises(ServerError):
        run_against({("GET", "/v1/messages/batches/msgbatch_1"): answering(body)}, status_of)


# -- results -----------------------------------------------------------------------------------------


def message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "max_tokens",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 5,
        },
    }


def errored(kind: str, text: str, nested: bool = True) -> dict[str, Any]:
    error = {"type": kind, "message": text}
    return {"type": "errored", "error": {"type": "error", "error": error} if nested else error}


def test_results_are_read_and_classified_as_online() -> None:
    credit = "Your credit balance is too low to access the Anthropic API."
    results = [
        ("a", {"type": "succeeded", "message": message("hello")}),
        ("b", errored("invalid_request_error", "prompt is too long")),
        ("c", errored("rate_limit_error", "slow down", nested=False)),
        ("d", errored("overloaded_error", "Overloaded")),
        ("e", errored("invalid_request_error", credit)),
        ("f", errored("authentication_error", f"bad key {KEY}")),
        ("g", {"type": "canceled"}),
        ("h", {"type": "expired"}),
        ("i", {"type": "succeeded", "message": {"content": None}}),
    ]

    async def handle(_request: web.Request) -> web.StreamResponse:
        body = "".join(json.dumps({"custom_id": c, "result": r}) + "\n" for c, r in results)
        return web.Response(body=body.encode(), content_type="application/binary")

    async def test(client: AnthropicBatches) -> list[BatchItem]:
        return [item async for item in client.results("msgbatch_1")]

    items = {i.custom_id: i for i in run_against({("GET", "/v1/messages/batches/msgbatch_1/results"): handle}, test)}
    assert items["a"].response == parse_message(json.dumps(message("hello")).encode(), {}, None)
    usage = items["a"].response.usage  # type: ignore[union-attr]
    assert usage is not None and (usage.prompt_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (45, 30, 5)
    kinds: dict[str, type[RequestError]] = {k: type(items[k].error) for k in "bcdefi"}  # type: ignore[misc]
    assert kinds == {
        "b": PermanentError,
        "c": RateLimitError,
        "d": ServerError,
        "e": QuotaExceededError,
        "f": AuthenticationError,
        "i": ServerError,
    }
    assert items["b"].error.status == 400 and items["b"].error.code == "invalid_request_error"  # type: ignore[union-attr]
    assert "prompt is too long" in str(items["b"].error) and KEY not in str(items["f"].error)
    assert items["g"].unanswered and items["h"].unanswered


def test_cancel_and_find() -> None:
    made = [message_batch(id=f"msgbatch_{n}", created_at=f"2024-09-24T18:00:{n:02d}Z") for n in range(9, 0, -1)]
    asked: list[str | None] = []
    cancelled: list[str] = []

    async def listing(request: web.Request) -> web.StreamResponse:
        after = request.query.get("after_id")
        asked.append(after)
        start = 0 if after is None else next(i for i, b in enumerate(made) if b["id"] == after) + 1
        page = made[start : start + 4]
        return web.json_response({"data": page, "has_more": start + 4 < 9, "first_id": None, "last_id": None})

    async def cancel(request: web.Request) -> web.StreamResponse:
        cancelled.append(request.match_info["id"])
        return web.json_response(message_batch("canceling"))

    async def test(client: AnthropicBatches) -> Any:
        await client.cancel("msgbatch_3")
        return await client.find({"run": "r1"}, since=1727200804.0)  # 18:00:04Z

    routes = {("GET", "/v1/messages/batches"): listing, ("POST", "/v1/messages/batches/{id}/cancel"): cancel}
    found = run_against(routes, test)
    assert cancelled == ["msgbatch_3"]
    assert [b.id for b in found] == ["msgbatch_9", "msgbatch_8", "msgbatch_7", "msgbatch_6", "msgbatch_5", "msgbatch_4"]
    assert asked == [None, "msgbatch_6"]


# -- whole batches against the fake provider process -----------------------------------------------


def against_fake(server: FakeServer, test: Callable[[AnthropicBatches], Awaitable[Any]], key: str = KEY) -> Any:
    async def go() -> Any:
        client = AnthropicBatches("anthropic/claude-x", api_base=server.url, api_key=key)
        try:
            return await test(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


async def until_ended(client: AnthropicBatches, batch_id: str, limit_s: float = 60.0) -> BatchStatus:
    """Poll every 0.1 s until the batch ends (a bound, never reached unless the client is wrong)."""
    for _ in range(int(limit_s / 0.1)):
        status = await client.status(batch_id)
        if status.state is BatchState.ENDED:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not end within {limit_s:g} s")


def prompts(n: int) -> list[Request]:
    return [Request.from_prompt(i, f"question {i}") for i in range(n)]


def test_a_batch_at_the_fake_answers_every_request_as_online(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "1", "--batch-error-rate", "0.3", "--seed", "7", "--api-key", KEY)
    asked = [*prompts(30), Request.from_prompt(30, "never [[batch_permanent]]")]

    async def test(client: AnthropicBatches) -> Any:
        since = time.time() - 1
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in asked], {"run": "r1"})
        found = await client.find({"run": "r1"}, since=since)
        status = await until_ended(client, batch_id)
        return found, status, [item async for item in client.results(batch_id)]

    found, status, items = against_fake(server, test)
    assert [b.id for b in found] == [status.id] and found[0].state is BatchState.IN_PROGRESS
    assert status.ended_as is EndedAs.COMPLETED and status.total == 31
    assert sorted(item.custom_id for item in items) == sorted(f"r-{r.id}" for r in asked)
    by_id = {item.custom_id: item for item in items}
    assert isinstance(by_id["r-30"].error, PermanentError) and by_id["r-30"].error.status == 400
    answers = [item for item in items if item.response is not None]
    transient = [item for item in items if isinstance(item.error, ServerError)]
    assert answers and transient and len(answers) + len(transient) == 30
    assert (status.succeeded, status.failed) == (len(answers), len(transient) + 1)
    for item in answers:
        assert item.response is not None and item.response.usage is not None
        assert item.response.content == expected_content(f"question {item.custom_id.removeprefix('r-')}")


def test_cancelled_and_expired_requests_are_unanswered(fake_server: Callable[..., FakeServer]) -> None:
    slow = fake_server("--batch-seconds", "10")
    expiring = fake_server("--batch-seconds", "0.5", "--batch-expire-rate", "1")

    async def cancel(client: AnthropicBatches) -> Any:
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in prompts(5)], {})
        await client.cancel(batch_id)
        return await until_ended(client, batch_id), [item async for item in client.results(batch_id)]

    async def expire(client: AnthropicBatches) -> Any:
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in prompts(5)], {})
        return await until_ended(client, batch_id), [item async for item in client.results(batch_id)]

    for server, test, ended_as in [(slow, cancel, EndedAs.CANCELLED), (expiring, expire, EndedAs.EXPIRED)]:
        status, items = against_fake(server, test)
        assert status.ended_as is ended_as
        assert len(items) == 5 and all(item.unanswered for item in items)


def test_a_wrong_key_at_the_fake_stops_the_run(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--api-key", KEY)

    async def test(client: AnthropicBatches) -> Any:
        return await client.submit([client.encode("r-0", prompts(1)[0])], {})

    wrong = "sk-ant-api03-another-key-entirely-wrong"
    with pytest.raises(AuthenticationError) as caught:
        against_fake(server, test, key=wrong)
    assert wrong not in str(caught.value)
