"""The prompt estimate learns what the provider counts: a ratio and an offset, not a ratio alone."""

from __future__ import annotations

from llmgather.limits.tokens import CHARS_PER_TOKEN, TokenEstimator
from llmgather.types import Request, Usage


def counted_by_provider(request: Request) -> int:
    # As the fake provider counts: four characters a token, no framing.
    return sum(len(text) for text in request.texts()) // CHARS_PER_TOKEN


def test_prompts_of_mixed_lengths_are_estimated_as_the_provider_counts_them() -> None:
    estimator = TokenEstimator()
    lengths = [40, 1000, 120, 640, 80, 400, 960, 200, 60, 800, 300, 520]
    for i, length in enumerate(lengths):
        request = Request.from_prompt(i, "x" * length)
        estimator.observe(request, Usage(counted_by_provider(request), 10))
    for length in (40, 200, 1000):
        request = Request.from_prompt("new", "y" * length)
        # A ratio fitted to these over-estimated a 40-character prompt by a third (its framing tokens).
        assert abs(estimator.prompt_tokens(request) - counted_by_provider(request)) <= 1


def test_prompts_of_one_length_fall_back_to_the_ratio() -> None:
    estimator = TokenEstimator()
    for i in range(20):
        request = Request.from_prompt(i, "z" * 400)
        estimator.observe(request, Usage(200, 10))  # the provider counts twice the raw estimate
    assert estimator.prompt_tokens(Request.from_prompt("new", "z" * 400)) == 200
