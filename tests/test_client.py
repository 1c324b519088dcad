"""The Client shared by many tasks, and cancellation that leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import FakeServer

import llmgather
from llmgather.fake import expected_content


def test_fifty_agents_share_one_client_under_one_concurrency_limit(server: FakeServer) -> None:
    async def agents() -> list[str]:
        async with llmgather.Client("openai/fake", api_base=server.url, api_key="k", concurrency=8) as client:

            async def agent(n: int) -> str:
                replies = []
                for turn in range(3):
                    reply = await client.complete(f"[[fake latency=0.02]] agent {n} turn {turn}")
                    replies.append(reply.content or "")
                return replies[-1]

            return await asyncio.gather(*(agent(n) for n in range(50)))

    last_replies = asyncio.run(agents())
    assert last_replies == [expected_content(f"[[fake latency=0.02]] agent {n} turn 2") for n in range(50)]
    stats = server.stats()
    assert stats["answered"] == 150
    assert 1 < stats["max_in_flight"] <= 8


def test_complete_raises_the_error_of_a_failed_request(server: FakeServer) -> None:
    async def ask() -> None:
        async with llmgather.Client("openai/fake", api_base=server.url, api_key="k") as client:
            await client.complete("[[fake status=400]] nope")

    with pytest.raises(llmgather.PermanentError, match="forced 400"):
        asyncio.run(ask())


def test_map_yields_every_result_failures_included(server: FakeServer) -> None:
    async def run() -> list[llmgather.Result]:
        async with llmgather.Client("openai/fake", api_base=server.url, api_key="k") as client:
            return [r async for r in client.map(["a", "[[fake status=422]]", {"id": "x", "prompt": "c"}])]

    results = asyncio.run(run())
    assert sorted(str(r.id) for r in results) == ["0", "1", "x"]
    assert sum(r.ok for r in results) == 2


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is closed by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_cancellation_leaves_no_task_or_connection_behind(server: FakeServer) -> None:
    async def cancel_midway() -> tuple[int, int]:
        before = _open_sockets()
        prompts = [f"[[fake hang]] {i}" for i in range(20)]
        run = asyncio.create_task(llmgather.gather(prompts, model="openai/fake", api_base=server.url, api_key="k"))
        for _ in range(200):
            await asyncio.sleep(0.02)
            if server.stats()["in_flight"] == 20:
                break
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await asyncio.sleep(0.1)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert leftover == []
        return before, _open_sockets()

    before, after = asyncio.run(cancel_midway())
    assert after == before
    for _ in range(50):
        if server.stats()["in_flight"] == 0:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert server.stats()["in_flight"] == 0


def test_gather_with_an_output_resumes_where_it_stopped(server: FakeServer, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    prompts = [{"id": i, "prompt": f"api resume {i}"} for i in range(30)]
    with pytest.raises(llmgather.RunStopped):
        llmgather.run(prompts, model="openai/fake", api_base=server.url, api_key="k", output=out, max_requests=10)
    assert len(out.read_text().splitlines()) == 10
    with pytest.raises(llmgather.InputError, match="--resume"):
        llmgather.run(prompts, model="openai/fake", api_base=server.url, api_key="k", output=out)
    results = llmgather.run(prompts, model="openai/fake", api_base=server.url, api_key="k", output=out, resume=True)
    assert [r.content for r in results] == [expected_content(str(p["prompt"])) for p in prompts]
    assert server.stats()["requests"] == 30
    assert len(out.read_text().splitlines()) == 30


def test_run_fans_out_to_every_model_in_the_list(server: FakeServer, tmp_path: Path) -> None:
    prompts = [f"fan {i}" for i in range(20)]
    out = tmp_path / "out.jsonl"
    results = llmgather.run(prompts, model=["openai/a", "openai/b"], api_base=server.url, api_key="k", output=out)
    assert [(r.id, r.model) for r in results] == [(i, m) for i in range(20) for m in ("openai/a", "openai/b")]
    assert [r.content for r in results] == [expected_content(p) for p in prompts for _ in range(2)]
    assert server.stats()["requests"] == 40 and len(out.read_text().splitlines()) == 40


def test_agents_sharing_a_client_stop_within_its_cost_budget(server: FakeServer) -> None:
    with pytest.raises(ValueError, match="prices="):
        llmgather.run(["x"], model="openai/fake", api_base=server.url, api_key="k", max_cost=1.0)
    prices = {"openai/fake": (1000.0, 2000.0)}  # about $0.04 a request

    async def agents() -> list[float]:
        costs: list[float] = []
        options = {"api_base": server.url, "api_key": "k", "concurrency": 8, "prices": prices}
        async with llmgather.Client("openai/fake", max_cost=0.5, **options) as client:

            async def agent(n: int) -> None:
                with contextlib.suppress(llmgather.RunStopped):
                    for turn in range(10):
                        costs.append((await client.complete(f"budgeted agent {n} turn {turn}")).cost_usd or 0.0)

            await asyncio.gather(*(agent(n) for n in range(8)))
        return costs

    costs = asyncio.run(agents())
    assert 0.5 - 2 * max(costs) < sum(costs) <= 0.5


def test_no_key_for_the_hosted_endpoint_is_refused_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        llmgather.run(["x"], model="openai/gpt-5-mini")


def test_an_async_function_runs_under_the_same_limits_and_retries() -> None:
    in_flight = peak = 0
    attempts: dict[object, int] = {}

    async def step(request: llmgather.Request) -> str:
        nonlocal in_flight, peak
        attempts[request.id] = attempts.get(request.id, 0) + 1
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            text = request.messages[-1]["content"]
            if "flaky" in text and attempts[request.id] == 1:
                raise llmgather.ServerError("busy, try again", retry_after=0.01)
            if "broken" in text:
                raise KeyError("a bug in the step")
            return text.upper()
        finally:
            in_flight -= 1

    prompts = [f"flaky {i}" for i in range(10)] + ["broken"]
    backend = llmgather.FunctionBackend(step, model="agent-step")
    results = llmgather.run(prompts, model="agent-step", backend=backend, concurrency=3, max_retries=2)
    assert [r.content for r in results[:10]] == [p.upper() for p in prompts[:10]]
    assert all(r.attempts == 2 for r in results[:10]) and 1 < peak <= 3
    broken = results[10]
    assert broken.error is not None and broken.attempts == 1 and "KeyError" in broken.error.message


def test_a_failing_source_of_prompts_is_raised_not_swallowed(server: FakeServer) -> None:
    async def prompts() -> AsyncIterator[str]:
        for i in range(5):
            yield f"before the failure {i}"
        raise RuntimeError("the caller's own generator broke")

    async def run() -> list[llmgather.Result]:
        async with llmgather.Client("openai/fake", api_base=server.url) as client:
            return [r async for r in client.map(prompts())]

    with pytest.raises(RuntimeError, match="generator broke"):
        asyncio.run(run())


def test_complete_and_map_check_what_they_are_given_as_a_file_line_is_checked(server: FakeServer) -> None:
    async def ask() -> None:
        async with llmgather.Client("openai/fake", api_base=server.url) as client:
            with pytest.raises(llmgather.InputError, match="role"):
                await client.complete([{"role": "bogus", "content": "hi"}])
            with pytest.raises(llmgather.InputError, match="max_tokens"):
                await client.complete("hi", max_tokens=-3)
            with pytest.raises(llmgather.InputError, match="item 1"):
                [r async for r in client.map(["fine", {"messages": "not a list"}])]

    asyncio.run(ask())
    with pytest.raises(llmgather.InputError, match="unknown keyword rmp="):
        llmgather.run(["x"], model="openai/fake", api_base=server.url, rmp=5)


def test_no_key_is_refused_before_the_output_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": 0, "model": "openai/gpt-5-mini", "content": "kept", "error": null}\n')
    before = out.read_bytes()
    with pytest.raises(llmgather.InputError, match="OPENAI_API_KEY is not set"):
        llmgather.run(["x"], model="openai/gpt-5-mini", output=out, overwrite=True)
    assert out.read_bytes() == before
