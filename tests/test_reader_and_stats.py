from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from llmgather.errors import InputError
from llmgather.io.reader import InputFile, requests_from
from llmgather.stats import LatencyHistogram


def test_ids_default_to_the_line_number(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b", "temperature": 0}\n')
    source = InputFile(path)
    assert source.check() == 2
    requests = list(source)
    assert [r.id for r in requests] == [1, 3]
    assert requests[1].params == {"temperature": 0}


def test_an_int_id_and_its_string_are_different_ids(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "prompt": "a"}\n{"id": "1", "prompt": "b"}\n')
    assert InputFile(path).check() == 2


def test_an_empty_input_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n")
    with pytest.raises(InputError, match="no requests"):
        InputFile(path).check()


def test_api_input_rejects_repeated_ids() -> None:
    with pytest.raises(InputError, match="item 1"):
        requests_from([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])


def test_histogram_percentiles_are_within_one_percent() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(-1, 1) for _ in range(20_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    ordered = sorted(values)
    for q in (50, 95, 99):
        exact = ordered[int(len(ordered) * q / 100) - 1]
        estimate = histogram.percentile(q)
        assert estimate is not None and exact * 0.99 <= estimate <= exact * 1.02
    assert LatencyHistogram().percentile(50) is None


def test_token_estimates_are_calibrated_by_the_usage_providers_report() -> None:
    from llmgather.limits.tokens import DEFAULT_COMPLETION_TOKENS, TokenEstimator
    from llmgather.types import Request, Usage

    estimator = TokenEstimator()
    request = Request.from_prompt(1, "x" * 400)  # 100 tokens by characters, 4 of framing
    assert estimator.estimate(request) == 104 + DEFAULT_COMPLETION_TOKENS
    # This provider counts 2 characters a token and no framing, and answers in 20 tokens.
    estimator.observe(request, Usage(prompt_tokens=200, completion_tokens=20, total_tokens=220))
    longer = Request.from_prompt(2, "y" * 800)
    assert estimator.estimate(longer) == math.ceil(204 * 200 / 104) + 20


def test_openai_models_are_counted_with_tiktoken_when_it_has_the_encoding() -> None:
    from llmgather.limits.tokens import TokenEstimator, tiktoken_counter
    from llmgather.types import Request

    assert tiktoken_counter("openai/llama-3.1-8b") is None  # not an OpenAI model: characters
    count = tiktoken_counter("openai/gpt-4o-mini")
    assert count is not None
    request = Request.from_prompt(1, "hello world " * 100)
    # The dev extras install LiteLLM, which ships the encodings: no network is needed.
    assert count(request.texts()) == 201
    assert TokenEstimator(count).prompt_tokens(request) == 201 + 4
    # An encoding that cannot be had (no network, no copy): the estimate from characters serves.
    from llmgather.limits.tokens import _TiktokenCount

    unavailable = _TiktokenCount("no_such_encoding")
    assert unavailable(request.texts()) is None
    assert TokenEstimator(unavailable).prompt_tokens(request) == 1200 // 4 + 4
