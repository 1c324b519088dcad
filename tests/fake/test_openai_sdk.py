"""The fake provider's OpenAI side held to the official `openai` SDK with strict validation; and the error
shapes of other providers it serves there: Groq's 498, `x-should-retry`, Google's quota bodies."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import openai
from conftest import FakeServer

from llmgather.fake import expected_content, prompt_text

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]


def client(base_url: str, max_retries: int = 0) -> openai.AsyncOpenAI:
    # Strict: every answer and every stream chunk is validated against the SDK's models, not just copied.
    return openai.AsyncOpenAI(
        base_url=base_url, api_key="sk-test", max_retries=max_retries, _strict_response_validation=True
    )


def test_chat_plain_streamed_and_models_validate_strictly(server: FakeServer) -> None:
    async def scenario() -> tuple[Any, list[Any], list[Any]]:
        async with client(server.url) as oai:
            plain = await oai.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
            stream = await oai.chat.completions.create(
                model="fake-model",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            models = [model async for model in oai.models.list()]
            return plain, chunks, models

    plain, chunks, models = asyncio.run(scenario())
    expected = expected_content(prompt_text(MESSAGES), 16)
    assert plain.choices[0].message.content == expected and isinstance(plain.created, int)
    assert plain.usage.prompt_tokens_details.cached_tokens == 0
    assert all(isinstance(chunk.created, int) and chunk.created > 0 for chunk in chunks)
    assert all("created" in chunk.model_dump(exclude_unset=True) for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].usage.completion_tokens == 16
    assert [m.id for m in models] == ["fake-model"] and all(isinstance(m.created, int) for m in models)


def test_cached_tokens_are_reported_in_prompt_tokens_details(server: FakeServer) -> None:
    messages = [{"role": "user", "content": "a long shared preamble, then a question [[fake cached=5]]"}]

    async def scenario() -> Any:
        async with client(server.url) as oai:
            return await oai.chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]

    usage = asyncio.run(scenario()).usage
    assert usage.prompt_tokens_details.cached_tokens == 5 and usage.prompt_tokens > 5


def test_groqs_498_and_x_should_retry_steer_the_sdks_own_retries(server: FakeServer) -> None:
    """The SDK retries a 498 only because the header says so, and never a 500 whose header says not to."""

    async def attempt(prompt: str) -> openai.APIStatusError:
        async with client(server.url, max_retries=2) as oai:
            try:
                await oai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": prompt}])
            except openai.APIStatusError as error:
                return error
        raise AssertionError("no error raised")

    capacity = asyncio.run(attempt("[[fake status=498 code=capacity_exceeded should_retry=true retry_after=0.01]]"))
    assert capacity.status_code == 498 and capacity.code == "capacity_exceeded"
    assert capacity.response.headers["x-should-retry"] == "true"
    assert server.stats()["requests"] == 3  # the first try and the SDK's two retries
    refused = asyncio.run(attempt("[[fake status=500 should_retry=false]]"))
    assert isinstance(refused, openai.InternalServerError)
    assert server.stats()["requests"] == 4  # a 500 is retried by default, but the header said no


def post_chat(url: str, prompt: str) -> tuple[int, dict[str, str], Any]:
    body = json.dumps({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def test_gemini_directives_answer_googles_quota_array(server: FakeServer) -> None:
    google = server.url.removesuffix("/v1") + "/v1beta/openai/chat/completions"
    day = post_chat(google, "[[fake gemini=day]]")
    minute = post_chat(google, "[[fake gemini=minute retry_delay=2]]")
    for status, headers, body in (day, minute):
        assert status == 429 and isinstance(body, list) and len(body) == 1
        assert body[0]["error"]["status"] == "RESOURCE_EXHAUSTED" and body[0]["error"]["code"] == 429
        assert "retry-after" not in {name.lower() for name in headers}
    day_details = {d["@type"].rsplit(".", 1)[-1]: d for d in day[2][0]["error"]["details"]}
    minute_details = {d["@type"].rsplit(".", 1)[-1]: d for d in minute[2][0]["error"]["details"]}
    assert set(day_details) == {"QuotaFailure", "Help"}
    violation = day_details["QuotaFailure"]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert violation["quotaMetric"] == "generativelanguage.googleapis.com/generate_content_free_tier_requests"
    assert violation["quotaValue"] == "250"
    assert minute_details["RetryInfo"]["retryDelay"] == "2s"
    assert minute_details["QuotaFailure"]["violations"][0]["quotaId"] == (
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    )
    assert post_chat(google, "fine")[0] == 200


def test_the_daily_quota_answers_googles_per_day_body_after_n_answers(
    fake_server: Callable[..., FakeServer],
) -> None:
    server = fake_server("--daily-quota", "2")
    statuses = [post_chat(server.url + "/chat/completions", f"p{i}") for i in range(4)]
    assert [status for status, _, _ in statuses] == [200, 200, 429, 429]
    violation = statuses[2][2][0]["error"]["details"][0]["violations"][0]
    assert violation["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert violation["quotaValue"] == "2"
