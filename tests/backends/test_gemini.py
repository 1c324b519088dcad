"""Gemini through Google's OpenAI-compatible endpoint: its error bodies come as a JSON array, a per-day quota
stops the run, a per-minute one waits the `RetryInfo.retryDelay` the body gives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from conftest import FakeServer

import llmgather
from llmgather.backends import make_backend
from llmgather.backends.openai import OpenAIBackend
from llmgather.engine import Engine
from llmgather.errors import AuthenticationError, QuotaExceededError, RateLimitError, RequestError
from llmgather.fake import expected_content
from llmgather.limits import Limits
from llmgather.retry import RetryPolicy, parse_duration
from llmgather.types import Request, Result

KEY = "AIzaSyTestKeyTestKeyTestKey123"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
PER_MINUTE = "GenerateContentInputTokensPerModelPerMinute-FreeTier"


def google_429(*details: dict[str, Any]) -> list[dict[str, Any]]:
    message = "You exceeded your current quota, please check your plan and billing details."
    return [{"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED", "details": list(details)}}]


def quota_failure(*quota_ids: str) -> dict[str, Any]:
    violations = [
        {"quotaMetric": "generativelanguage.googleapis.com/x", "quotaId": q, "quotaValue": "250"} for q in quota_ids
    ]
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations}


def retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


HELP = {
    "@type": "type.googleapis.com/google.rpc.Help",
    "links": [{"url": "https://ai.google.dev/gemini-api/docs/rate-limits"}],
}


def error_of(status: int, body: Any, headers: dict[str, str] | None = None) -> RequestError:
    """What the backend raises for one answer of an in-process server at Google's path."""

    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)

    async def go() -> RequestError:
        app = web.Application()
        app.router.add_post("/v1beta/openai/chat/completions", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1beta/openai"
        backend = OpenAIBackend("gemini/gemini-2.5-flash", api_base=base, api_key=KEY)
        try:
            await backend.send(Request.from_prompt(1, "x"))
        except RequestError as exc:
            return exc
        finally:
            await backend.aclose()
            await runner.cleanup()
        raise AssertionError("no error")

    return asyncio.run(go())


def test_gemini_models_go_to_googles_compatible_endpoint() -> None:
    backend = make_backend("gemini/gemini-2.5-flash", api_base=None, api_key="k", max_connections=4)
    assert isinstance(backend, OpenAIBackend) and backend.model == "gemini-2.5-flash"
    assert backend.endpoint == "https://generativelanguage.googleapis.com/v1beta/openai"


def test_an_error_body_sent_as_a_json_array_is_read() -> None:
    body = [{"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}}]
    error = error_of(400, body)
    assert error.message == "Request contains an invalid argument." and type(error).__name__ == "PermanentError"
    assert error.code == "INVALID_ARGUMENT"  # Google's name for it, not its `code`, which repeats the status


def test_a_message_of_several_lines_is_one_line() -> None:
    message = "You exceeded your current quota.\n* Quota exceeded for metric: generate_content_free_tier_requests"
    body = [{"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}}]
    assert error_of(429, body).message == message.replace("\n", " ")


def test_a_bad_key_stops_the_run_and_is_never_quoted() -> None:
    details = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"},
        {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": f"Invalid API key: {KEY}"},
    ]
    body = [
        {
            "error": {
                "code": 400,
                "message": f"API key not valid: {KEY}",
                "status": "INVALID_ARGUMENT",
                "details": details,
            }
        }
    ]
    error = error_of(400, body)
    assert type(error) is AuthenticationError and error.code == "API_KEY_INVALID"
    assert KEY not in str(error) and error.message.startswith("API key not valid")


def test_a_per_day_quota_stops_the_run() -> None:
    error = error_of(429, google_429(quota_failure(PER_DAY), HELP, retry_info("5s")))
    assert type(error) is QuotaExceededError and error.code == PER_DAY
    assert error.message.startswith("You exceeded your current quota")


def test_a_per_day_violation_beside_a_per_minute_one_still_stops_the_run() -> None:
    error = error_of(429, google_429(quota_failure(PER_MINUTE, PER_DAY), retry_info("30s")))
    assert type(error) is QuotaExceededError


@pytest.mark.parametrize(("delay", "seconds"), [("23s", 23.0), ("1.5s", 1.5), ("0s", 0.0)])
def test_a_per_minute_quota_waits_the_retry_delay(delay: str, seconds: float) -> None:
    error = error_of(429, google_429(HELP, quota_failure(PER_MINUTE), retry_info(delay)))
    assert type(error) is RateLimitError and error.retry_after == seconds


def test_a_retry_after_header_wins_over_the_bodys_delay() -> None:
    error = error_of(429, google_429(quota_failure(PER_MINUTE), retry_info("23s")), {"retry-after": "3"})
    assert type(error) is RateLimitError and error.retry_after == 3.0


@pytest.mark.parametrize("text", ["23", "s", "-1s", "nans", "infs", None, 5])
def test_a_duration_that_is_not_one_is_ignored(text: object) -> None:
    assert parse_duration(text) is None


def run_engine(server: FakeServer, prompts: list[str], sleeps: list[float], concurrency: int = 1) -> list[Result]:
    """The prompts through one engine to the fake's Gemini-shaped path; every wait it asks for is recorded
    and skipped."""
    backend = OpenAIBackend("gemini/gemini-2.5-flash", api_base=server.url.removesuffix("/v1") + "/v1beta/openai")

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    async def go() -> list[Result]:
        engine = Engine(backend, limits=Limits(concurrency=concurrency), retry=RetryPolicy.testing(3), sleep=sleep)
        try:
            return [r async for r in engine.results(Request.from_prompt(i, p) for i, p in enumerate(prompts))]
        finally:
            await backend.aclose()

    return asyncio.run(go())


def test_against_the_fake_a_per_minute_quota_is_waited_out_and_answered(server: FakeServer) -> None:
    sleeps: list[float] = []
    prompt = "[[fake gemini=minute retry_delay=2 times=1]] hello"
    [result] = run_engine(server, [prompt], sleeps)
    assert result.ok and result.content == expected_content(prompt) and result.attempts == 2
    assert result.rate_limited == 1 and 2.0 in sleeps  # testing() backoff is 0: the wait is the body's delay


def test_against_the_fake_a_per_day_quota_stops_after_its_first_refusal(server: FakeServer) -> None:
    sleeps: list[float] = []
    prompts = ["fine", "[[fake gemini=day]] over", "never sent", "nor this"]
    with pytest.raises(llmgather.RunStopped) as stopped:
        run_engine(server, prompts, sleeps)
    assert isinstance(stopped.value.cause, QuotaExceededError)
    assert server.stats()["by_status"] == {"200": 1, "429": 1}
