"""What a provider's rate-limit headers announce, per budget: its limit, what is left of it, and when it is whole.

OpenAI (and those that copy it) send `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, with resets as
durations ("1s", "6m0s", "250ms"); `tokens` counts input and output together. Anthropic sends
`anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}`, with resets as RFC 3339
times; its `tokens` is whichever of the input and output limits is the most restrictive now, not a budget of its
own, so it is read as the combined budget only when neither of the two is announced. A proxy that counts per clock
window (LiteLLM Proxy) sends limit and remaining but no reset.

Pure: the caller gives the wall clock's time, for Anthropic's resets.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime


class Kind(enum.IntEnum):
    """The budgets a provider may count: requests, tokens in and out together, tokens in, tokens out."""

    REQUESTS = 0
    TOKENS = 1
    INPUT = 2
    OUTPUT = 3

    @property
    def label(self) -> str:
        return ("requests", "input and output", "input", "output")[self]


@dataclass(frozen=True, slots=True)
class Announced:
    """One budget as an answer announced it; None for what it did not say."""

    limit: float | None
    remaining: float | None = None
    reset_s: float | None = None
    """Seconds from now until the budget is whole again."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def announced(headers: Mapping[str, str], now_wall: float) -> dict[Kind, Announced]:
    """Every budget the headers say anything of (an empty dict for an answer that says nothing)."""
    found: dict[Kind, Announced] = {}
    for kind, limit, remaining, reset, parse in _NAMES:
        _read(found, kind, headers, limit, remaining, reset, parse, now_wall)
    if Kind.INPUT not in found and Kind.OUTPUT not in found and Kind.TOKENS not in found:
        _read(found, Kind.TOKENS, headers, *_ANTHROPIC_TOKENS, now_wall)
    return found


def has_limit_headers(headers: Mapping[str, str]) -> bool:
    """Whether an answer carries any rate-limit header at all."""
    return any(name.lower().startswith(("x-ratelimit-", "anthropic-ratelimit-")) for name in headers)


def _read(
    found: dict[Kind, Announced],
    kind: Kind,
    headers: Mapping[str, str],
    limit_name: str,
    remaining_name: str,
    reset_name: str,
    parse_reset: Callable[[str, float], float | None],
    now_wall: float,
) -> None:
    limit_text, remaining_text = headers.get(limit_name), headers.get(remaining_name)
    if limit_text is None and remaining_text is None:  # most answers of most providers: said nothing
        return
    limit, remaining = _positive(limit_text), _number(remaining_text)
    if limit is None and remaining is None:
        return
    reset_text = headers.get(reset_name)
    reset_s = None if reset_text is None else parse_reset(reset_text, now_wall)
    found[kind] = Announced(limit, remaining, reset_s)


def _duration_s(text: str, now_wall: float) -> float | None:
    """OpenAI's reset: "20ms", "1s", "1.5s", "6m0s", "1h2m3s" (a bare number is seconds)."""
    text = text.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def _timestamp_s(text: str, now_wall: float) -> float | None:
    """Anthropic's reset: an RFC 3339 time ("2026-11-26T12:00:07Z"), as seconds from now."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # RFC 3339 always says its offset; a time without one is not to be guessed at
    return max(0.0, moment.timestamp() - now_wall)


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if 0 <= number < math.inf else None  # NaN fails both


def _positive(text: str | None) -> float | None:
    number = _number(text)
    return number if number is not None and number > 0 else None


_Names = tuple[str, str, str, Callable[[str, float], float | None]]


def _openai(name: str) -> _Names:
    return (f"x-ratelimit-limit-{name}", f"x-ratelimit-remaining-{name}", f"x-ratelimit-reset-{name}", _duration_s)


def _anthropic(name: str) -> _Names:
    prefix = f"anthropic-ratelimit-{name}"
    return (f"{prefix}-limit", f"{prefix}-remaining", f"{prefix}-reset", _timestamp_s)


# Every answer is read: the header names are spelled out once.
_NAMES: tuple[tuple[Kind, str, str, str, Callable[[str, float], float | None]], ...] = (
    (Kind.REQUESTS, *_openai("requests")),
    (Kind.TOKENS, *_openai("tokens")),
    (Kind.REQUESTS, *_anthropic("requests")),
    (Kind.INPUT, *_anthropic("input-tokens")),
    (Kind.OUTPUT, *_anthropic("output-tokens")),
)
_ANTHROPIC_TOKENS = _anthropic("tokens")
