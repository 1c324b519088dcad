"""What both sides of the fake provider share: its settings, the answer to a prompt, directives, refusals."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_DIRECTIVE = re.compile(r"\[\[fake([^\]]*)\]\]")
HANG_S = 3600.0
CREDIT_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or "
    "purchase credits."
)


@dataclass
class FakeConfig:
    latency: float = 0.0
    jitter: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    input_tpm: int | None = None
    output_tpm: int | None = None
    clock_minute: bool = False
    """Count limits per clock minute, with no per-second share, as LiteLLM Proxy does."""
    fail_rate: float = 0.0
    overload_rate: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    seed: int = 0
    api_key: str | None = None
    models: tuple[str, ...] = ()
    quota: int | None = None
    daily_quota: int | None = None
    credit_after: int | None = None
    completion_tokens: int = 16
    log_path: str | None = None
    limit_headers: bool = True
    max_context: int | None = None
    outage: tuple[float, float] | None = None
    """(start, seconds) after the first request: every request in that time gets a 503."""
    batch_seconds: float = 2.0
    """Time from a batch's creation to its end (OpenAI and Anthropic batches)."""
    batch_error_rate: float = 0.0
    batch_expire_rate: float = 0.0
    batch_max_requests: int | None = None
    """Requests per batch; None is each provider's own limit (50,000 OpenAI, 100,000 Anthropic)."""
    batch_enqueued_tokens: int | None = None
    """OpenAI's enqueued-token limit: prompt tokens of a model's batches not yet ended."""


@dataclass(slots=True)
class Refusal:
    """An error answer, before an endpoint puts it in its provider's shape."""

    status: int
    message: str
    kind: str | None = None
    """OpenAI's error type; Anthropic's follows from the status."""
    code: str | None = None
    retry_after: float | None = None
    should_retry: str | None = None
    body: Any = None
    """A whole body in a third provider's shape (Google's), sent as it is."""


@dataclass(slots=True)
class Ask:
    """A request as every endpoint sees it, once its prompt is known."""

    digest: str
    seen: int
    """How many times this prompt came before: a retry gets a fresh fault draw."""
    directive: dict[str, str]
    model: str

    @property
    def forced(self) -> bool:
        if not self.directive:
            return False
        times = self.directive.get("times")
        return times is None or self.seen < int(times)


@dataclass
class FakeStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    drops: int = 0
    hangs: int = 0
    stream_errors: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
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
            "stream_errors": self.stream_errors,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "answered": sum(self.answers_per_prompt.values()),
            "answered_twice": sum(1 for n in self.answers_per_prompt.values() if n > 1),
        }


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


def parse_directive(text: str) -> dict[str, str]:
    match = _DIRECTIVE.search(text)
    if match is None:
        return {}
    directive: dict[str, str] = {}
    for word in match.group(1).split():
        key, _, value = word.partition("=")
        directive[key] = value
    return directive or {"plain": ""}
