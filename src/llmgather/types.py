"""The vocabulary every layer shares: what goes in, what comes back.

Plain slotted dataclasses: these are made once per request on the hot path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

RequestId = str | int
Message = dict[str, Any]

DELIVERY_PARAMS = frozenset({"stream", "stream_options", "user", "metadata", "store", "timeout", "request_timeout"})
"""Parameters that change how an answer arrives, not what it says: left out of digests and cache keys."""


@dataclass(slots=True)
class Request:
    """One chat completion to make. `params` passes through to the provider (temperature, max_tokens, ...)."""

    id: RequestId
    messages: list[Message]
    params: dict[str, Any] = field(default_factory=dict)
    # Where the request came from, so that errors can name it ("prompts.jsonl:12").
    source: str = ""
    row: dict[str, Any] | None = None
    """The input row's other columns (expected answer, category), carried into the result for scoring."""
    # `canonical()` and `digest()` are asked for more than once per request (the result's digest, the cache's
    # get and put): made once. A request is not changed once it is sent.
    _canonical: str | None = field(default=None, init=False, repr=False, compare=False)
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_prompt(cls, id: RequestId, prompt: str, **params: Any) -> Request:
        return cls(id=id, messages=[{"role": "user", "content": prompt}], params=params)

    def texts(self) -> Iterator[str]:
        """The text of every message, in order (for counting its tokens)."""
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                yield content
            elif isinstance(content, list):
                yield from (str(part.get("text", "")) for part in content if isinstance(part, dict))

    def answer_params(self) -> dict[str, Any]:
        """The parameters that change what the answer says (temperature, max_tokens, ...)."""
        return {k: v for k, v in self.params.items() if k not in DELIVERY_PARAMS}

    def canonical(self) -> str:
        """The request as canonical JSON (sorted keys, compact): what an answer depends on, model aside."""
        if self._canonical is None:
            self._canonical = json.dumps(
                {"messages": self.messages, "params": self.answer_params()},
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
                default=str,
            )
        return self._canonical

    def digest(self) -> str:
        """A short fingerprint of `canonical()`: an output line carries it, so that a resume can tell
        whether an id still names the request that was answered."""
        if self._digest is None:
            self._digest = hashlib.blake2b(self.canonical().encode(), digest_size=8).hexdigest()
        return self._digest

    def prompt_chars(self) -> int:
        return sum(len(text) for text in self.texts())

    def completion_budget(self) -> int | None:
        budget = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return budget if isinstance(budget, int) else None


@dataclass(slots=True)
class Usage:
    """Tokens as billed. `prompt_tokens` counts every input token, cached or not, as OpenAI reports it;
    `cache_read_tokens` and `cache_write_tokens` are the parts of it read from and written to the provider's
    prompt cache, which are billed at their own rates (Anthropic reports the three apart: a backend adds them up)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def uncached_prompt_tokens(self) -> int:
        return max(0, self.prompt_tokens - self.cache_read_tokens - self.cache_write_tokens)

    def to_dict(self) -> dict[str, int]:
        counts = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        # Only when there are any: most requests use no prompt cache, and every output line carries these.
        if self.cache_read_tokens:
            counts["cache_read_tokens"] = self.cache_read_tokens
        if self.cache_write_tokens:
            counts["cache_write_tokens"] = self.cache_write_tokens
        return counts


@dataclass(slots=True)
class Response:
    """What a backend hands the engine: the answer, and what the provider said about its limits."""

    content: str | None
    usage: Usage | None = None
    finish_reason: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    ttft_s: float | None = None
    """Seconds from sending to the first token, for a streamed answer."""


@dataclass(slots=True)
class ErrorInfo:
    type: str
    status: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "message": self.message}


@dataclass(slots=True)
class Result:
    """The outcome of one request: an answer or an error, never both."""

    id: RequestId
    model: str
    content: str | None = None
    usage: Usage | None = None
    latency_s: float = 0.0
    attempts: int = 0
    cost_usd: float | None = None
    error: ErrorInfo | None = None
    finish_reason: str | None = None
    cached: bool = False
    """Answered from the response cache: no request was sent for it."""
    row: dict[str, Any] | None = None
    answered_by: str | None = None
    """The fallback model that answered, when `model` itself failed."""
    rate_limited: int = 0
    """How many of its attempts got a 429."""
    finished_at: float | None = None
    """When it was known (Unix time): the report draws the run over time from it."""
    digest: str | None = None
    """`Request.digest()` of the request answered: a resume checks that the id still names it."""
    ttft_s: float | None = None
    """Seconds from sending the attempt that answered to its first token; streamed answers only."""
    lane: str | None = None
    """In a batch run, how it was answered: "batch", or "online" (sent online after the batches' deadline)."""
    batch_id: str | None = None
    """The provider's batch that answered it (or last held it)."""
    # The error itself, for callers that raise it (Client.complete); never written out.
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Result:
        """A result read back from an output line (see `to_dict`)."""
        usage, error = record.get("usage"), record.get("error")
        return cls(
            id=record["id"],
            model=record["model"],
            content=record.get("content"),
            usage=Usage(**usage) if usage else None,
            latency_s=record.get("latency_s") or 0.0,
            attempts=record.get("attempts") or 0,
            cost_usd=record.get("cost_usd"),
            error=ErrorInfo(error.get("type", ""), error.get("status"), error.get("message", "")) if error else None,
            cached=bool(record.get("cached")),
            row=record.get("row"),
            answered_by=record.get("answered_by"),
            rate_limited=record.get("rate_limited") or 0,
            finished_at=record.get("finished_at"),
            digest=record.get("digest"),
            ttft_s=record.get("ttft_s"),
            lane=record.get("lane"),
            batch_id=record.get("batch_id"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "content": self.content,
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "latency_s": round(self.latency_s, 4),
            "attempts": self.attempts,
            "cost_usd": self.cost_usd,
            "error": self.error.to_dict() if self.error is not None else None,
            "cached": self.cached,
            "rate_limited": self.rate_limited,
            "finished_at": round(self.finished_at, 3) if self.finished_at is not None else None,
            **({"digest": self.digest} if self.digest is not None else {}),
            **({"ttft_s": round(self.ttft_s, 4)} if self.ttft_s is not None else {}),
            **({"row": self.row} if self.row is not None else {}),
            **({"answered_by": self.answered_by} if self.answered_by is not None else {}),
            **({"lane": self.lane} if self.lane is not None else {}),
            **({"batch_id": self.batch_id} if self.batch_id is not None else {}),
        }
