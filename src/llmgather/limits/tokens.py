"""Token counts known before sending: a fast estimate of the prompt plus the completion budget."""

from __future__ import annotations

from llmgather.types import Request

# About four characters a token in English text, and a few tokens of framing per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
# Until a completion has been seen, assume this many completion tokens when no budget is given.
DEFAULT_COMPLETION_TOKENS = 256


class TokenEstimator:
    """Estimates a request's tokens; learns typical completion length from what comes back."""

    __slots__ = ("_completion_tokens_seen", "_completions_seen")

    def __init__(self) -> None:
        self._completion_tokens_seen = 0
        self._completions_seen = 0

    def estimate(self, request: Request) -> int:
        prompt = request.prompt_chars() // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE * len(request.messages)
        budget = request.completion_budget()
        if budget is None:
            budget = self.typical_completion()
        return prompt + budget

    def typical_completion(self) -> int:
        if self._completions_seen == 0:
            return DEFAULT_COMPLETION_TOKENS
        return self._completion_tokens_seen // self._completions_seen + 1

    def observe(self, completion_tokens: int) -> None:
        self._completion_tokens_seen += completion_tokens
        self._completions_seen += 1
