"""OpenAI's Files and Batches APIs through `OpenAIBatches`: the lines it writes, the calls it makes, the states
and results it reads back. Edge cases against an in-process server that says exactly what a test needs; whole
batches against the fake provider process at the end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import FakeServer

from llmgather.backends.openai import OpenAIBackend, parse_completion
from llmgather.batch.anthropic import AnthropicBatches
from llmgather.batch.api import BatchItem, BatchProblem, BatchState, BatchStatus, EndedAs
from llmgather.batch.apis import make_batch_api
from llmgather.batch.openai import OpenAIBatches
from llmgather.errors import (
    AuthenticationError,
    ConnectError,
    InputError,
    PermanentError,
    QuotaExceededError,
    RateLimitError,
    RequestTimeout,
    ServerError,
)
from llmgather.fake.common import expected_content
from llmgather.types import Request

KEY = "sk-proj-secret-key-for-batch-tests-only"
Routes = dict[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]]


def run_against(routes: Routes, test: Callable[[OpenAIBatches], Awaitable[Any]]) -> Any:
    """`test` with a client of a server answering `routes` ((method, path) -> handler) under /v1."""

    async def go() -> Any:
        app = web.Application()
        for (method, path), handler in routes.items():
            app.router.add_route(method, "/v1" + path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = OpenAIBatches("openai/gpt-x", api_base=f"http://127.0.0.1:{port}/v1", api_key=KEY)
        try:
            return await test(client)
        finally:
            await client.aclose()
            await runner.cleanup()

    return asyncio.run(go())


def answering(body: Any, status: int = 200) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return handle


def batch(status: str = "in_progress", **fields: Any) -> dict[str, Any]:
    return {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": None,
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": 1_700_000_000,
        "request_counts": {"total": 3, "completed": 1, "failed": 1},
        "metadata": {"run": "r1", "part": "0"},
        **fields,
    }


async def collect(items: AsyncIterator[BatchItem]) -> list[BatchItem]:
    return [item async for item in items]


# -- the line ------------------------------------------------------------------------------------------


def test_a_line_is_the_online_body_without_streaming() -> None:
    client = OpenAIBatches("openai/gpt-x", api_key=KEY)
    request = Request.from_prompt("a", "Hi\nthere", temperature=0.2, stream=True, stream_options={"x": 1})
    line = client.encode("c-1", request)
    assert b"\n" not in line
    online = OpenAIBackend("openai/gpt-x", api_key=KEY)._body(Request.from_prompt("a", "Hi\nthere", temperature=0.2))
    assert json.loads(line) == {"custom_id": "c-1", "method": "POST", "url": "/v1/chat/completions", "body": online}


def test_the_client_is_chosen_by_the_wire_at_the_online_endpoint() -> None:
    assert isinstance(make_batch_api("openai/gpt-x", api_base=None, api_key=KEY), OpenAIBatches)
    gemini = make_batch_api("gemini/gemini-2.5-flash", api_base=None, api_key=KEY)
    assert isinstance(gemini, OpenAIBatches) and gemini.endpoint.startswith("https://generativelanguage")
    own = make_batch_api("my-model/x", api_base="http://127.0.0.1:9/v1/", api_key=None)
    assert isinstance(own, OpenAIBatches) and own.endpoint == "http://127.0.0.1:9/v1" and own.model == "my-model/x"
    claude = make_batch_api("anthropic/claude-x", api_base="http://127.0.0.1:9/v1", api_key=KEY)
    assert isinstance(claude, AnthropicBatches) and claude.endpoint == "http://127.0.0.1:9"
    assert claude.model == "claude-x" and (claude.max_requests, gemini.max_requests) == (100_000, 50_000)
    with pytest.raises(InputError):
        make_batch_api("bedrock/claude", api_base=None, api_key=KEY)


# -- submit ------------------------------------------------------------------------------------------


def test_submit_uploads_the_file_then_makes_a_tagged_batch_of_it() -> None:
    seen: dict[str, Any] = {}

    async def upload(request: web.Request) -> web.StreamResponse:
        seen["auth"] = request.headers.get("Authorization")
        form = await request.post()
        upload = form["file"]
        assert isinstance(upload, web.FileField)
        seen["purpose"], seen["file"] = form["purpose"], upload.file.read()
        return web.json_response({"id": "file-in", "object": "file", "purpose": "batch"})

    async def create(request: web.Request) -> web.StreamResponse:
        seen["create"] = await request.json()
        return web.json_response(batch("validating"))

    lines = [json.dumps({"custom_id": f"c{i}"}).encode() for i in range(3)]

    async def test(client: OpenAIBatches) -> str:
        return await client.submit(lines, {"run": "r1", "part": "0"})

    routes: Routes = {("POST", "/files"): upload, ("POST", "/batches"): create}
    assert run_against(routes, test) == "batch_1"
    assert seen["auth"] == f"Bearer {KEY}" and seen["purpose"] == "batch"
    assert seen["file"] == b"".join(line + b"\n" for line in lines)
    assert seen["create"] == {
        "input_file_id": "file-in",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"run": "r1", "part": "0"},
    }


def test_a_refused_key_stops_and_is_never_quoted() -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}

    async def test(client: OpenAIBatches) -> Any:
        return await client.submit([b"{}"], {})

    with pytest.raises(AuthenticationError) as caught:
        run_against({("POST", "/files"): answering(echo, 401)}, test)
    assert KEY not in str(caught.value) and "\n" not in str(caught.value)


def test_a_spent_quota_on_a_call_stops_the_run() -> None:
    quota = {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}}

    async def test(client: OpenAIBatches) -> Any:
        return await client.status("batch_1")

    with pytest.raises(QuotaExceededError):
        run_against({("GET", "/batches/batch_1"): answering(quota, 429)}, test)


def test_a_connection_refused_is_a_connect_error() -> None:
    client = OpenAIBatches("openai/gpt-x", api_base="http://127.0.0.1:9/v1", api_key=KEY)

    async def go() -> None:
        try:
            await client.status("batch_1")
        finally:
            await client.aclose()

    with pytest.raises(ConnectError):
        asyncio.run(go())


# -- status ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state", "ended_as"),
    [
        ("validating", BatchState.VALIDATING, None),
        ("in_progress", BatchState.IN_PROGRESS, None),
        ("finalizing", BatchState.FINALIZING, None),
        ("cancelling", BatchState.FINALIZING, None),
        ("completed", BatchState.ENDED, EndedAs.COMPLETED),
        ("failed", BatchState.ENDED, EndedAs.FAILED),
        ("expired", BatchState.ENDED, EndedAs.EXPIRED),
        ("cancelled", BatchState.ENDED, EndedAs.CANCELLED),
    ],
)
def test_states_map_onto_four(status: str, state: BatchState, ended_as: EndedAs | None) -> None:
    async def test(client: OpenAIBatches) -> Any:
        return await client.status("batch_1")

    found = run_against({("GET", "/batches/batch_1"): answering(batch(status))}, test)
    assert (found.state, found.ended_as) == (state, ended_as)
    assert (found.id, found.total, found.succeeded, found.failed) == ("batch_1", 3, 1, 1)
    assert found.tags == {"run": "r1", "part": "0"} and found.created_at == 1_700_000_000


def test_a_failed_batch_says_why_and_which_lines() -> None:
    errors = {
        "object": "list",
        "data": [
            {"code": "invalid_json_line", "message": "This line is not\nparseable.", "param": None, "line": 7},
            {"code": "token_limit_exceeded", "message": "Enqueued token limit reached.", "line": None},
        ],
    }

    async def test(client: OpenAIBatches) -> Any:
        return await client.status("batch_1")

    found = run_against({("GET", "/batches/batch_1"): answering(batch("failed", errors=errors))}, test)
    assert found.problems == (
        BatchProblem("invalid_json_line", "This line is not parseable.", 7),
        BatchProblem("token_limit_exceeded", "Enqueued token limit reached.", None),
    )
    assert found.over_token_limit


@pytest.mark.parametrize("body", [batch("teleporting"), {"id": "batch_1"}, [1, 2], batch(request_counts={"total": -1})])
def test_a_malformed_batch_is_a_server_error_on_one_line(body: Any) -> None:
    async def test(client: OpenAIBatches) -> Any:
        return await client.status("batch_1")

    with pytest.raises(ServerError) as caught:
        run_against({("GET", "/batches/batch_1"): answering(body)}, test)
    assert "malformed" in str(caught.value) and "\n" not in str(caught.value)


# -- results -----------------------------------------------------------------------------------------


def completion(text: str, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 5,
            "total_tokens": 25,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def answered(custom_id: str, status: int, body: Any) -> dict[str, Any]:
    return {"id": f"br_{custom_id}", "custom_id": custom_id, "response": {"status_code": status, "body": body}}


def not_run(custom_id: str, code: str) -> dict[str, Any]:
    return {"id": f"br_{custom_id}", "custom_id": custom_id, "response": None, "error": {"code": code, "message": "m"}}


def error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def file_of(*lines: dict[str, Any]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.Response(body="".join(json.dumps(line) + "\n" for line in lines).encode())

    return handle


def test_results_read_the_output_file_then_the_error_file_as_online() -> None:
    long = "x" * 300_000  # longer than aiohttp's readline allows
    output = file_of(answered("a", 200, completion("hello", cached=12)), answered("b", 200, completion(long)))
    errors = file_of(
        answered("c", 400, error("context too long", "context_length_exceeded")),
        answered("d", 429, error("Rate limit reached", "rate_limit_exceeded")),
        answered("e", 500, error("The server had an error")),
        answered("f", 400, error(f"Incorrect API key {KEY}", "insufficient_quota")),
        not_run("g", "batch_expired"),
        not_run("h", "batch_cancelled"),
        answered("i", 200, {"choices": []}),
        not_run("j", "request_timeout"),
    )
    routes: Routes = {
        ("GET", "/batches/batch_1"): answering(batch("completed", output_file_id="file-out", error_file_id="file-err")),
        ("GET", "/files/file-out/content"): output,
        ("GET", "/files/file-err/content"): errors,
    }

    async def test(client: OpenAIBatches) -> list[BatchItem]:
        return await collect(client.results("batch_1"))

    items = {item.custom_id: item for item in run_against(routes, test)}
    assert list(items) == list("abcdefghij")
    assert items["a"].response == parse_completion(json.dumps(completion("hello", cached=12)).encode(), {}, None)
    assert items["a"].response.usage.cache_read_tokens == 12  # type: ignore[union-attr]
    assert items["b"].response.content == long and items["b"].response.finish_reason == "length"  # type: ignore[union-attr]
    kinds = {k: type(items[k].error) for k in "cdefij"}
    assert kinds == {
        "c": PermanentError,
        "d": RateLimitError,
        "e": ServerError,
        "f": QuotaExceededError,
        "i": ServerError,
        "j": RequestTimeout,
    }
    assert items["c"].error.status == 400 and items["c"].error.code == "context_length_exceeded"  # type: ignore[union-attr]
    assert KEY not in str(items["f"].error)
    assert items["g"].unanswered and items["h"].unanswered


def test_results_of_a_batch_without_files_are_none() -> None:
    async def test(client: OpenAIBatches) -> list[BatchItem]:
        return await collect(client.results("batch_1"))

    assert run_against({("GET", "/batches/batch_1"): answering(batch("failed"))}, test) == []


def test_a_result_line_naming_no_request_is_a_server_error() -> None:
    routes: Routes = {
        ("GET", "/batches/batch_1"): answering(batch("completed", output_file_id="file-out")),
        ("GET", "/files/file-out/content"): file_of({"response": {"status_code": 200, "body": completion("x")}}),
    }

    async def test(client: OpenAIBatches) -> list[BatchItem]:
        return await collect(client.results("batch_1"))

    with pytest.raises(ServerError):
        run_against(routes, test)


# -- cancel and find ---------------------------------------------------------------------------------


def test_cancel_posts_to_the_batch() -> None:
    cancelled: list[str] = []

    async def cancel(request: web.Request) -> web.StreamResponse:
        cancelled.append(request.match_info["id"])
        return web.json_response(batch("cancelling"))

    async def test(client: OpenAIBatches) -> None:
        await client.cancel("batch_7")

    run_against({("POST", "/batches/{id}/cancel"): cancel}, test)
    assert cancelled == ["batch_7"]


def test_find_pages_back_until_batches_are_older_than_since() -> None:
    # Newest first, two a page; `since` falls inside the third page, so a fourth is never asked for.
    made = [
        batch(id=f"batch_{n}", created_at=1000 + n, metadata={"run": "r1" if n % 2 else "r2", "part": str(n)})
        for n in range(9, 0, -1)
    ]
    asked: list[str | None] = []

    async def listing(request: web.Request) -> web.StreamResponse:
        after = request.query.get("after")
        asked.append(after)
        start = 0 if after is None else next(i for i, b in enumerate(made) if b["id"] == after) + 1
        return web.json_response({"object": "list", "data": made[start : start + 2], "has_more": start + 2 < 9})

    async def test(client: OpenAIBatches) -> Any:
        return await client.find({"run": "r1"}, since=1005)

    found = run_against({("GET", "/batches"): listing}, test)
    assert [b.id for b in found] == ["batch_9", "batch_7", "batch_5"]
    assert asked == [None, "batch_8", "batch_6"]


# -- whole batches against the fake provider process -----------------------------------------------


def against_fake(server: FakeServer, test: Callable[[OpenAIBatches], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        client = OpenAIBatches("openai/gpt-x", api_base=server.url, api_key=KEY)
        try:
            return await test(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


async def until_ended(client: Any, batch_id: str, limit_s: float = 60.0) -> tuple[list[BatchState], BatchStatus]:
    """Poll every 0.1 s until the batch ends (a bound, never reached unless the client is wrong)."""
    seen: list[BatchState] = []
    for _ in range(int(limit_s / 0.1)):
        status = await client.status(batch_id)
        if not seen or seen[-1] is not status.state:
            seen.append(status.state)
        if status.state is BatchState.ENDED:
            return seen, status
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not end within {limit_s:g} s; states seen {seen}")


def prompts(n: int) -> list[Request]:
    return [Request.from_prompt(i, f"question {i}") for i in range(n)]


def test_a_batch_at_the_fake_answers_every_request_as_online(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "1", "--batch-error-rate", "0.3", "--seed", "7")
    asked = [*prompts(30), Request.from_prompt(30, "never [[batch_permanent]]")]

    async def test(client: OpenAIBatches) -> Any:
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in asked], {"llmgather_run": "r1"})
        seen, status = await until_ended(client, batch_id)
        return seen, status, await collect(client.results(batch_id))

    seen, status, items = against_fake(server, test)
    assert seen[0] is BatchState.VALIDATING and seen[-1] is BatchState.ENDED
    assert status.ended_as is EndedAs.COMPLETED and status.total == 31 and status.tags == {"llmgather_run": "r1"}
    assert sorted(item.custom_id for item in items) == sorted(f"r-{r.id}" for r in asked)
    by_id = {item.custom_id: item for item in items}
    assert isinstance(by_id["r-30"].error, PermanentError) and by_id["r-30"].error.status == 400
    answers = [item for item in items if item.response is not None]
    transient = [item for item in items if isinstance(item.error, ServerError | RateLimitError)]
    assert answers and transient and len(answers) + len(transient) == 30
    assert (status.succeeded, status.failed) == (len(answers), len(transient) + 1)
    for item in answers:
        assert item.response is not None and item.response.usage is not None
        assert item.response.content == expected_content(f"question {item.custom_id.removeprefix('r-')}")


def test_expired_and_cancelled_requests_are_unanswered(fake_server: Callable[..., FakeServer]) -> None:
    expiring = fake_server("--batch-seconds", "0.5", "--batch-expire-rate", "1")
    slow = fake_server("--batch-seconds", "10")

    async def expire(client: OpenAIBatches) -> Any:
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in prompts(5)], {})
        return (await until_ended(client, batch_id))[1], await collect(client.results(batch_id))

    async def cancel(client: OpenAIBatches) -> Any:
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in prompts(5)], {})
        await client.cancel(batch_id)
        return (await until_ended(client, batch_id))[1], await collect(client.results(batch_id))

    for server, test, ended_as in [(expiring, expire, EndedAs.EXPIRED), (slow, cancel, EndedAs.CANCELLED)]:
        status, items = against_fake(server, test)
        assert status.ended_as is ended_as
        assert len(items) == 5 and all(item.unanswered for item in items)


def test_an_invalid_line_fails_the_batch_naming_it(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "0.5")
    asked = [*prompts(3), Request.from_prompt(3, "bad [[batch_invalid]]")]

    async def test(client: OpenAIBatches) -> Any:
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in asked], {})
        return (await until_ended(client, batch_id))[1]

    status = against_fake(server, test)
    assert status.ended_as is EndedAs.FAILED and not status.over_token_limit
    assert [problem.line for problem in status.problems] == [4]


def test_over_the_enqueued_token_limit_the_batch_fails_saying_so(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "2", "--batch-enqueued-tokens", "10")  # 20 prompts of 2 tokens

    async def test(client: OpenAIBatches) -> Any:
        batch_id = await client.submit([client.encode(f"r-{r.id}", r) for r in prompts(20)], {})
        return (await until_ended(client, batch_id))[1]

    assert against_fake(server, test).over_token_limit


def test_find_lists_the_batches_carrying_the_tags(fake_server: Callable[..., FakeServer]) -> None:
    server = fake_server("--batch-seconds", "30")

    async def test(client: OpenAIBatches) -> Any:
        since = time.time() - 1
        made = [await client.submit([client.encode("r-0", r)], {"run": f"r{i % 2}"}) for i, r in enumerate(prompts(5))]
        found = await client.find({"run": "r0"}, since=since)
        for batch_id in made:
            await client.cancel(batch_id)
        return made, found

    made, found = against_fake(server, test)
    assert sorted(b.id for b in found) == sorted(made[0::2])
    assert all(b.tags == {"run": "r0"} and b.state is BatchState.VALIDATING for b in found)
