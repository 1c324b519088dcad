"""The fake provider: an OpenAI-compatible server with latency, rate limits and faults.

Answers are deterministic from the prompt (see `expected_content`), so a caller can check that each
result belongs to its request. Faults are drawn from a seed, per prompt and per time that prompt was
seen, so a retried request gets a fresh draw and a rerun with the same seed fails the same way.

A prompt may also carry a directive that forces an answer, for tests:
    [[fake status=503 times=2 retry_after=0.5]]   answer 503 to the first two attempts
    [[fake status=429 code=insufficient_quota]]   every attempt
    [[fake hang times=1]]  /  [[fake drop times=1]]  /  [[fake latency=0.5]]
    [[fake malformed=body]]  /  [[fake malformed=chunk]]   a 200 whose body (or a stream chunk) is not
        JSON and echoes the request's credentials back, as a lying proxy would

This module imports nothing from llmgather, so tests and demos of any version can use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_DIRECTIVE = re.compile(r"\[\[fake([^\]]*)\]\]")
HANG_S = 3600.0


@dataclass
class FakeConfig:
    latency: float = 0.0
    jitter: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    seed: int = 0
    api_key: str | None = None
    models: tuple[str, ...] = ()
    quota: int | None = None
    completion_tokens: int = 16
    log_path: str | None = None
    limit_headers: bool = True
    max_context: int | None = None
    outage: tuple[float, float] | None = None
    """(start, seconds) after the first request: every request in that time gets a 503."""


def prompt_text(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def prompt_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expected_content(text: str, completion_tokens: int = 16) -> str:
    """The answer the fake provider gives to a prompt: its digest, then filler up to the token count."""
    digest = prompt_digest(text)
    words = [f"answer-{digest}"] + [f"w{i}" for i in range(1, max(1, completion_tokens))]
    return " ".join(words)


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def format_reset(seconds: float) -> str:
    """OpenAI's reset durations: '250ms', '1.5s', '6m0s'."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class _Window:
    """Amounts admitted over the last `span_s` seconds."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float) -> None:
        while self.entries and self.entries[0][0] <= now - self.span_s:
            self.total -= self.entries.popleft()[1]

    def seconds_until_room(self, now: float, amount: int, limit: int) -> float:
        """How long until `amount` more fits under `limit` (0.0 if it fits now)."""
        excess = self.total + amount - limit
        if excess <= 0:
            return 0.0
        freed = 0
        for stamp, size in self.entries:
            freed += size
            if freed >= excess:
                return stamp + self.span_s - now
        return self.span_s

    def add(self, now: float, amount: int) -> None:
        self.entries.append((now, amount))
        self.total += amount


class _Limit:
    """A per-minute limit enforced over a sliding minute and, quantized, over every second."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.per_second = max(1, -(-per_minute // 60))
        self.minute = _Window(60.0)
        self.second = _Window(1.0)

    def check(self, now: float, amount: int) -> float:
        self.minute.expire(now)
        self.second.expire(now)
        return max(
            self.minute.seconds_until_room(now, amount, self.per_minute),
            self.second.seconds_until_room(now, min(amount, self.per_second), self.per_second),
        )

    def add(self, now: float, amount: int) -> None:
        self.minute.add(now, amount)
        self.second.add(now, amount)

    def remaining(self) -> int:
        return max(0, self.per_minute - self.minute.total)

    def reset_s(self, now: float) -> float:
        if not self.minute.entries:
            return 0.0
        return max(0.0, self.minute.entries[-1][0] + 60.0 - now)


@dataclass
class FakeStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    drops: int = 0
    hangs: int = 0
    answers_per_prompt: Counter[str] = field(default_factory=Counter)
    seen_per_prompt: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rate_limited": self.by_status.get(429, 0),
            "drops": self.drops,
            "hangs": self.hangs,
            "answered": sum(self.answers_per_prompt.values()),
            "answered_twice": sum(1 for n in self.answers_per_prompt.values() if n > 1),
        }


class FakeProvider:
    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.stats = FakeStats()
        self._requests = _Limit(config.rpm) if config.rpm else None
        self._tokens = _Limit(config.tpm) if config.tpm else None
        self._log = open(config.log_path, "a", buffering=1) if config.log_path else None  # noqa: SIM115
        self._first_request_at: float | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/_fake/stats", self.show_stats)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self._log is not None:
            self._log.close()

    async def list_models(self, request: web.Request) -> web.Response:
        names = self.config.models or ("fake-model",)
        return web.json_response(
            {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "fake"} for n in names]}
        )

    async def show_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.to_dict())

    async def chat(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            response = await self._answer(request)
            self._record(request.get("digest"), response.status)
            return response
        finally:
            stats.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if self.config.api_key and request.headers.get("Authorization") != f"Bearer {self.config.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_api_key", "invalid_request_error")
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
            model = str(body.get("model", ""))
        except (ValueError, KeyError, TypeError):
            return self._error(
                400, "The request body is not a valid chat completion request.", None, "invalid_request_error"
            )
        if self.config.models and model not in self.config.models:
            return self._error(404, f"The model `{model}` does not exist.", "model_not_found", "invalid_request_error")
        text = prompt_text(messages)
        digest = request["digest"] = prompt_digest(text)
        if self._in_outage():
            return self._error(503, "The service is temporarily unavailable.", None, "server_error")
        seen = self.stats.seen_per_prompt[digest]
        self.stats.seen_per_prompt[digest] += 1
        directive = _parse_directive(text)
        forced = _directive_applies(directive, seen)

        if (forced and "drop" in directive) or (
            not directive and self._draw(digest, seen, "drop", self.config.drop_rate)
        ):
            return await self._drop(request, digest)
        if (forced and "hang" in directive) or (
            not directive and self._draw(digest, seen, "hang", self.config.hang_rate)
        ):
            self.stats.hangs += 1
            self._record(digest, "hang")
            await asyncio.sleep(HANG_S)
        if forced and "status" in directive:
            status = int(directive["status"])
            retry_after = float(directive["retry_after"]) if "retry_after" in directive else None
            return self._error(status, f"forced {status}", directive.get("code"), "fake_error", retry_after)
        if forced and "malformed" in directive:
            return await self._malformed(request, directive["malformed"])
        if not directive and self._draw(digest, seen, "fail", self.config.fail_rate):
            return self._error(503, "The server is overloaded.", None, "server_error")
        if self.config.quota is not None and self.stats.by_status.get(200, 0) >= self.config.quota:
            return self._error(429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota")

        if self.config.max_context is not None and count_tokens(text) > self.config.max_context:
            return self._error(
                400,
                f"This model's maximum context length is {self.config.max_context} tokens.",
                "context_length_exceeded",
                "invalid_request_error",
            )
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        completion_tokens = int(max_tokens) if max_tokens else self.config.completion_tokens
        completion_tokens = min(completion_tokens, self.config.completion_tokens) if max_tokens else completion_tokens
        prompt_tokens = count_tokens(text)
        limited = self._admit(prompt_tokens + (int(max_tokens) if max_tokens else completion_tokens))
        if limited is not None:
            return limited

        latency = float(directive.get("latency", self.config.latency))
        if self.config.jitter:
            latency += random.Random(f"{self.config.seed}:{digest}:{seen}:lat").uniform(0, self.config.jitter)
        if latency > 0:
            await asyncio.sleep(latency)
        content = expected_content(text, completion_tokens)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        self.stats.answers_per_prompt[digest] += 1
        self.stats.by_status[200] += 1
        if body.get("stream"):
            return await self._stream(request, model, content, usage, body)
        return web.json_response(
            {
                "id": f"chatcmpl-{digest}-{seen}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
            headers=self._limit_headers(),
        )

    def _in_outage(self) -> bool:
        now = time.monotonic()
        if self._first_request_at is None:
            self._first_request_at = now
        if self.config.outage is None:
            return False
        start, seconds = self.config.outage
        return start <= now - self._first_request_at < start + seconds

    def _draw(self, digest: str, seen: int, kind: str, rate: float) -> bool:
        return rate > 0 and random.Random(f"{self.config.seed}:{digest}:{seen}:{kind}").random() < rate

    def _admit(self, tokens: int) -> web.Response | None:
        now = time.monotonic()
        wait = 0.0
        if self._requests is not None:
            wait = self._requests.check(now, 1)
        if self._tokens is not None:
            wait = max(wait, self._tokens.check(now, tokens))
        if wait > 0:
            return self._error(
                429,
                "Rate limit reached for requests. Please try again later.",
                "rate_limit_exceeded",
                "requests",
                wait,
            )
        if self._requests is not None:
            self._requests.add(now, 1)
        if self._tokens is not None:
            self._tokens.add(now, tokens)
        return None

    def _limit_headers(self) -> dict[str, str]:
        now = time.monotonic()
        headers: dict[str, str] = {}
        if not self.config.limit_headers:
            return headers
        for name, limit in (("requests", self._requests), ("tokens", self._tokens)):
            if limit is None:
                continue
            limit.minute.expire(now)
            headers[f"x-ratelimit-limit-{name}"] = str(limit.per_minute)
            headers[f"x-ratelimit-remaining-{name}"] = str(limit.remaining())
            headers[f"x-ratelimit-reset-{name}"] = format_reset(limit.reset_s(now))
        return headers

    def _error(
        self, status: int, message: str, code: str | None, kind: str | None, retry_after: float | None = None
    ) -> web.Response:
        self.stats.by_status[status] += 1
        headers = self._limit_headers()
        if retry_after is not None:
            headers["retry-after-ms"] = str(max(1, round(retry_after * 1000)))
            headers["retry-after"] = str(max(1, round(retry_after + 0.5)))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    async def _drop(self, request: web.Request, digest: str) -> web.Response:
        self.stats.drops += 1
        self._record(digest, "drop")
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # the connection is gone: nothing more to say on it

    async def _stream(
        self, request: web.Request, model: str, content: str, usage: dict[str, int], body: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **self._limit_headers()})
        await response.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        await response.write(chunk({"role": "assistant", "content": ""}))
        for i, word in enumerate(content.split(" ")):
            await response.write(chunk({"content": word if i == 0 else " " + word}))
        await response.write(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(data)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _malformed(self, request: web.Request, where: str) -> web.StreamResponse:
        """A 200 that is not what it claims, quoting the caller's credentials: redaction's test."""
        self.stats.by_status[200] += 1
        echoed = "; ".join(
            f"{name}: {request.headers[name]}"
            for name in ("Authorization", "x-api-key", "api-key")
            if name in request.headers
        )
        if where != "chunk":
            return web.Response(text=f"<html>upstream said no. You sent {echoed}</html>", content_type="text/html")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        opening = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(opening)}\n\n".encode())
        bare = echoed.replace("Authorization: Bearer ", "")  # the key alone, shaped like nothing
        await response.write(f"data: {{'choices': [], 'echo': {bare}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _record(self, digest: str | None, outcome: int | str) -> None:
        if self._log is not None:
            self._log.write(json.dumps({"t": round(time.time(), 4), "prompt": digest, "outcome": outcome}) + "\n")


def _parse_directive(text: str) -> dict[str, str]:
    match = _DIRECTIVE.search(text)
    if match is None:
        return {}
    directive: dict[str, str] = {}
    for word in match.group(1).split():
        key, _, value = word.partition("=")
        directive[key] = value
    return directive or {"plain": ""}


def _directive_applies(directive: dict[str, str], seen: int) -> bool:
    if not directive:
        return False
    times = directive.get("times")
    return times is None or seen < int(times)


async def serve(config: FakeConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the port bound."""
    # handler_cancellation: a request whose client went away stops too, so the server sees it leave.
    runner = web.AppRunner(FakeProvider(config).app(), access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])
