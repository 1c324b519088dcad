"""The fake provider: OpenAI's chat completions and Anthropic's messages, with latency, rate limits and faults.

Answers are deterministic from the prompt (see `expected_content`), so a caller can check that each
result belongs to its request. Faults are drawn from a seed, per prompt and per time that prompt was
seen, so a retried request gets a fresh draw and a rerun with the same seed fails the same way.

A prompt may also carry a directive that forces an answer, for tests (on both endpoints):
    [[fake status=503 times=2 retry_after=0.5]]   answer 503 to the first two attempts
    [[fake status=429 code=insufficient_quota]]   every attempt
    [[fake status=498 code=capacity_exceeded should_retry=true]]   with an `x-should-retry` header
    [[fake hang times=1]]  /  [[fake drop times=1]]  /  [[fake latency=0.5]]
    [[fake gemini=day]]  /  [[fake gemini=minute retry_delay=2]]   Google's 429 quota bodies
    [[fake malformed=body]]  /  [[fake malformed=chunk]]   a 200 whose body (or a stream chunk) is not
        JSON and echoes the request's credentials back, as a lying proxy would (chat completions)
    [[fake cached=N]]   N of the prompt's tokens are reported cached (chat completions)
    [[fake stream_error=overloaded_error times=1]]   a 200 stream cut by an error event (messages)

OpenAI's Files and Batches and Anthropic's Message Batches are served too (batches_openai.py,
batches_anthropic.py), outside the online limits, on a clock: see batches.py.

This module imports nothing from llmgather, so tests and demos of any version can use it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from llmgather.fake import anthropic, batches_anthropic, batches_openai, gemini
from llmgather.fake.batches import BatchStore
from llmgather.fake.common import (
    CREDIT_MESSAGE,
    HANG_S,
    Ask,
    FakeConfig,
    FakeStats,
    Refusal,
    count_tokens,
    expected_content,
    parse_directive,
    prompt_digest,
    prompt_text,
)
from llmgather.fake.limits import Budgets, Ticket

__all__ = ["FakeConfig", "FakeProvider", "expected_content", "prompt_digest", "prompt_text", "serve"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def format_reset(seconds: float) -> str:
    """OpenAI's reset durations: '250ms', '1.5s', '6m0s'."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, secs = divmod(seconds, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class FakeProvider:
    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.stats = FakeStats()
        self.budgets = Budgets(config.rpm, config.tpm, config.input_tpm, config.output_tpm, config.clock_minute)
        self.cached_prefixes: set[str] = set()
        self._log = open(config.log_path, "a", buffering=1) if config.log_path else None  # noqa: SIM115
        self._first_request_at: float | None = None
        # A batch's answers count as answers too: a prompt answered in a batch and online was paid twice.
        self.batches = BatchStore(config, self._write, lambda digest: self.stats.answers_per_prompt.update([digest]))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=batches_anthropic.MAX_BYTES + 1024 * 1024)
        for prefix in ("/v1", "/v1beta/openai"):
            app.router.add_post(f"{prefix}/chat/completions", self._counted(self._chat))
            app.router.add_get(f"{prefix}/models", self.list_models)
        app.router.add_post("/v1/messages", self._counted(lambda request: anthropic.messages(self, request)))
        batches_openai.add_routes(app, self)
        batches_anthropic.add_routes(app, self)
        app.router.add_get("/_fake/stats", self.show_stats)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        self.batches.settle_all()
        if self._log is not None:
            self._log.close()

    async def list_models(self, request: web.Request) -> web.Response:
        names = self.config.models or ("fake-model",)
        created = int(time.time())
        data = [{"id": n, "object": "model", "created": created, "owned_by": "fake"} for n in names]
        return web.json_response({"object": "list", "data": data})

    async def show_stats(self, request: web.Request) -> web.Response:
        batches = self.batches.stats()  # first: a batch seen ended here counts its answers
        return web.json_response({**self.stats.to_dict(), **self.budgets.peaks.to_dict(), "batches": batches})

    def _counted(self, handler: Handler) -> Handler:
        async def counted(request: web.Request) -> web.StreamResponse:
            stats = self.stats
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                response = await handler(request)
                self._record(request.get("digest"), response.status)
                return response
            finally:
                stats.in_flight -= 1

        return counted

    # The path every endpoint shares: the prompt is seen, faults and limits are applied, latency is waited.

    def begin(self, request: web.Request, text: str, model: str) -> Ask:
        digest = request["digest"] = prompt_digest(text)
        seen = self.stats.seen_per_prompt[digest]
        self.stats.seen_per_prompt[digest] += 1
        return Ask(digest, seen, parse_directive(text), model)

    async def admit(self, request: web.Request, ask: Ask, input_tokens: int, reserve: int) -> Ticket | Refusal:
        """Faults, then limits (`reserve` output tokens held until `settle`), then latency."""
        refusal = await self._fault(request, ask)
        if refusal is None:
            refusal = self._quota(ask, input_tokens)
        if refusal is not None:
            return refusal
        admitted = self.budgets.admit(input_tokens, reserve)
        if not isinstance(admitted, Ticket):
            wait, over = admitted
            limit = self.budgets.limits[over]
            per_minute = limit.per_minute if limit is not None else 0
            message = f"This request would exceed your rate limit of {per_minute:,} {over} per minute."
            kind = "requests" if over == "requests" else "tokens"
            return Refusal(429, message + " Please try again later.", kind, "rate_limit_exceeded", wait)
        latency = float(ask.directive.get("latency", self.config.latency))
        if self.config.jitter:
            draw = random.Random(f"{self.config.seed}:{ask.digest}:{ask.seen}:lat")
            latency += draw.uniform(0, self.config.jitter)
        if latency > 0:
            await asyncio.sleep(latency)
        return admitted

    def settle(self, ask: Ask, ticket: Ticket, output_tokens: int, answered: bool = True) -> None:
        self.budgets.settle(ticket, output_tokens)
        if answered:
            self.stats.answers_per_prompt[ask.digest] += 1
            self.stats.by_status[200] += 1

    async def _fault(self, request: web.Request, ask: Ask) -> Refusal | None:
        if self._in_outage():
            return Refusal(503, "The service is temporarily unavailable.", "server_error")
        directive, forced, free = ask.directive, ask.forced, not ask.directive
        if (forced and "drop" in directive) or (free and self._draw(ask, "drop", self.config.drop_rate)):
            await self._drop(request, ask.digest)
        if (forced and "hang" in directive) or (free and self._draw(ask, "hang", self.config.hang_rate)):
            self.stats.hangs += 1
            self._record(ask.digest, "hang")
            await asyncio.sleep(HANG_S)
        if forced and "status" in directive:
            status = int(directive["status"])
            retry_after = float(directive["retry_after"]) if "retry_after" in directive else None
            should_retry = directive.get("should_retry")
            return Refusal(status, f"forced {status}", "fake_error", directive.get("code"), retry_after, should_retry)
        if forced and "gemini" in directive:
            delay = float(directive["retry_delay"]) if "retry_delay" in directive else None
            body = gemini.quota_body(directive["gemini"], 250 if directive["gemini"] == "day" else 10, ask.model, delay)
            return Refusal(429, "quota", body=body)
        if free and self._draw(ask, "overload", self.config.overload_rate):
            return Refusal(529, "Overloaded", "overloaded_error")
        if free and self._draw(ask, "fail", self.config.fail_rate):
            return Refusal(503, "The server is overloaded.", "server_error")
        return None

    def _quota(self, ask: Ask, input_tokens: int) -> Refusal | None:
        config, answered = self.config, self.stats.by_status.get(200, 0)
        if config.quota is not None and answered >= config.quota:
            return Refusal(429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota")
        if config.daily_quota is not None and answered >= config.daily_quota:
            return Refusal(429, "quota", body=gemini.quota_body("day", config.daily_quota, ask.model))
        if config.credit_after is not None and answered >= config.credit_after:
            return Refusal(400, CREDIT_MESSAGE, "invalid_request_error")
        if config.max_context is not None and input_tokens > config.max_context:
            message = f"This model's maximum context length is {config.max_context} tokens."
            return Refusal(400, message, "invalid_request_error", "context_length_exceeded")
        return None

    def _in_outage(self) -> bool:
        now = time.monotonic()
        if self._first_request_at is None:
            self._first_request_at = now
        if self.config.outage is None:
            return False
        start, seconds = self.config.outage
        return start <= now - self._first_request_at < start + seconds

    def _draw(self, ask: Ask, kind: str, rate: float) -> bool:
        return rate > 0 and random.Random(f"{self.config.seed}:{ask.digest}:{ask.seen}:{kind}").random() < rate

    async def _drop(self, request: web.Request, digest: str) -> None:
        self.stats.drops += 1
        self._record(digest, "drop")
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # the connection is gone: nothing more to say on it

    def _record(self, digest: str | None, outcome: int | str) -> None:
        self._write({"t": round(time.time(), 4), "prompt": digest, "outcome": outcome})

    def _write(self, line: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(line) + "\n")

    # OpenAI's chat completions.

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.config.api_key and request.headers.get("Authorization") != f"Bearer {self.config.api_key}":
            refusal = Refusal(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
            return self._error(refusal)
        try:
            body = json.loads(await request.read())
            messages = body["messages"]
            model = str(body.get("model", ""))
            text = prompt_text(messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            message = "The request body is not a valid chat completion request."
            return self._error(Refusal(400, message, "invalid_request_error"))
        if self.config.models and model not in self.config.models:
            message = f"The model `{model}` does not exist."
            return self._error(Refusal(404, message, "invalid_request_error", "model_not_found"))
        ask = self.begin(request, text, model)
        if ask.forced and "malformed" in ask.directive:
            return await self._malformed(request, ask.directive["malformed"])
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        completion_tokens = self.config.completion_tokens
        if max_tokens:
            completion_tokens = min(int(max_tokens), completion_tokens)
        prompt_tokens = count_tokens(text)
        admitted = await self.admit(request, ask, prompt_tokens, int(max_tokens) if max_tokens else completion_tokens)
        if isinstance(admitted, Refusal):
            return self._error(admitted)
        self.settle(ask, admitted, completion_tokens)
        cached = min(prompt_tokens, int(ask.directive.get("cached", 0) or 0))
        self.stats.cache_read_tokens += cached
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        content = expected_content(text, completion_tokens)
        if body.get("stream"):
            return await self._stream(request, model, content, usage, body)
        return web.json_response(
            {
                "id": f"chatcmpl-{ask.digest}-{ask.seen}",
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

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if not self.config.limit_headers:
            return headers
        states = self.budgets.states()
        for name in ("requests", "tokens"):
            if (state := states.get(name)) is None:
                continue
            headers[f"x-ratelimit-limit-{name}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(state.remaining)
            if not self.config.clock_minute:  # LiteLLM Proxy's per-minute counts say no reset
                headers[f"x-ratelimit-reset-{name}"] = format_reset(state.reset_s)
        return headers

    def _error(self, refusal: Refusal) -> web.Response:
        self.stats.by_status[refusal.status] += 1
        if refusal.body is not None:  # Google's own shape, headers and all
            return web.json_response(refusal.body, status=refusal.status)
        headers = self._limit_headers()
        if refusal.retry_after is not None:
            headers["retry-after-ms"] = str(max(1, round(refusal.retry_after * 1000)))
            headers["retry-after"] = str(max(1, round(refusal.retry_after + 0.5)))
        if refusal.should_retry is not None:
            headers["x-should-retry"] = refusal.should_retry
        error = {"message": refusal.message, "type": refusal.kind, "param": None, "code": refusal.code}
        return web.json_response({"error": error}, status=refusal.status, headers=headers)

    async def _stream(
        self, request: web.Request, model: str, content: str, usage: dict[str, Any], body: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **self._limit_headers()})
        await response.prepare(request)
        created = int(time.time())

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            data = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        def delta(fields: dict[str, Any], finish: str | None = None) -> bytes:
            return chunk([{"index": 0, "delta": fields, "finish_reason": finish}])

        await response.write(delta({"role": "assistant", "content": ""}))
        for i, word in enumerate(content.split(" ")):
            await response.write(delta({"content": word if i == 0 else " " + word}))
        await response.write(delta({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(chunk([], usage=usage))
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


async def serve(config: FakeConfig, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the port bound."""
    # handler_cancellation: a request whose client went away stops too, so the server sees it leave.
    runner = web.AppRunner(FakeProvider(config).app(), access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])
