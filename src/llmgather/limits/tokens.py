"""Token counts known before sending: a fast estimate of the prompt plus the completion budget.

The estimate starts at about four characters a token and is calibrated by what the provider reports:
every answer's `usage` says how many prompt tokens it counted, and the ratio of those to the raw
estimates scales the next ones. A budget paced on estimates that run high wastes the limit; one paced
on estimates that run low earns 429s.
"""

from __future__ import annotations

import math

from llmgather.types import Request, Usage

# About four characters a token in English text, and a few tokens of framing per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
# Until a completion has been seen, assume this many completion tokens when no budget is given.
DEFAULT_COMPLETION_TOKENS = 256


class TokenEstimator:
    """Estimates a request's tokens; learns the prompt ratio and typical completion length from answers."""

    __slots__ = ("_completion_tokens_seen", "_completions_seen", "_counted_prompt_tokens", "_estimated_prompt_tokens")

    def __init__(self) -> None:
        self._completion_tokens_seen = 0
        self._completions_seen = 0
        self._estimated_prompt_tokens = 0
        self._counted_prompt_tokens = 0

    def estimate(self, request: Request) -> int:
        budget = request.completion_budget()
        if budget is None:
            budget = self.typical_completion()
        return self.prompt_tokens(request) + budget

    def prompt_tokens(self, request: Request) -> int:
        raw = _raw_prompt_tokens(request)
        if self._estimated_prompt_tokens == 0:
            return raw
        return math.ceil(raw * self._counted_prompt_tokens / self._estimated_prompt_tokens)

    def typical_completion(self) -> int:
        if self._completions_seen == 0:
            return DEFAULT_COMPLETION_TOKENS
        return math.ceil(self._completion_tokens_seen / self._completions_seen)

    def observe(self, request: Request, usage: Usage) -> None:
        self._completion_tokens_seen += usage.completion_tokens
        self._completions_seen += 1
        if usage.prompt_tokens > 0:
            self._estimated_prompt_tokens += _raw_prompt_tokens(request)
            self._counted_prompt_tokens += usage.prompt_tokens


def _raw_prompt_tokens(request: Request) -> int:
    return request.prompt_chars() // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(request.messages)
