"""Cost as billed: cached input at the provider's cache-read rate, Anthropic's cache writes at its write rate,
from the user's prices, LiteLLM's map and the bundled table alike."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import run_cli

from llmgather.backends.function import FunctionBackend
from llmgather.config import ModelConfig
from llmgather.engine import Engine
from llmgather.errors import InputError
from llmgather.litellm_files import litellm_file
from llmgather.pricing import PRICES_PER_MTOK, Prices, cost_function, parse_price, price_of
from llmgather.types import Request, Response, Usage

# 10,000 input tokens of which 6,000 read from the cache and 2,000 written to it; 1,000 output tokens.
CACHED = Usage(10_000, 1_000, 11_000, cache_read_tokens=6_000, cache_write_tokens=2_000)


def test_cached_input_is_billed_at_the_read_and_write_rates() -> None:
    sonnet = Prices(3.0, 15.0, 0.30, 3.75)
    assert sonnet.cost_usd(CACHED) == pytest.approx((2_000 * 3.0 + 6_000 * 0.30 + 2_000 * 3.75 + 1_000 * 15.0) / 1e6)
    # Reads cheaper, writes dearer than plain input: the same tokens uncached cost something else.
    assert sonnet.cost_usd(CACHED) != sonnet.cost_usd(Usage(10_000, 1_000, 11_000))


def test_a_model_without_a_cache_rate_bills_cached_tokens_as_input() -> None:
    plain = Prices(2.0, 8.0)
    assert plain.cost_usd(CACHED) == pytest.approx((10_000 * 2.0 + 1_000 * 8.0) / 1e6)
    read_only = Prices(2.0, 8.0, 0.5)  # OpenAI's kind: reads discounted, no write rate
    assert read_only.cost_usd(CACHED) == pytest.approx((4_000 * 2.0 + 6_000 * 0.5 + 1_000 * 8.0) / 1e6)


def test_the_bundled_table_carries_each_providers_cache_rates() -> None:
    for name, prices in PRICES_PER_MTOK.items():
        assert prices.cache_read is not None and 0 < prices.cache_read < prices.input, name
        if name.startswith("claude-"):  # Anthropic: reads 0.1x, five-minute writes 1.25x
            assert prices.cache_read == pytest.approx(0.1 * prices.input), name
            assert prices.cache_write == pytest.approx(1.25 * prices.input), name
        else:  # OpenAI and Gemini bill no write
            assert prices.cache_write is None, name
    assert price_of("anthropic/claude-sonnet-4-5", provider_endpoint=False) == Prices(3.0, 15.0, 0.30, 3.75)
    assert price_of("openai/gpt-4o-2024-08-06", provider_endpoint=False) == Prices(2.5, 10.0, 1.25)


def test_litellms_map_gives_its_cache_rates() -> None:
    path = litellm_file("model_prices_and_context_window_backup.json")
    if path is None:
        pytest.skip("LiteLLM is not installed")
    entry = json.loads(path.read_text())["claude-haiku-4-5"]
    prices = price_of("anthropic/claude-haiku-4-5")
    assert prices is not None
    assert prices.cache_read == pytest.approx(entry["cache_read_input_token_cost"] * 1e6)
    assert prices.cache_write == pytest.approx(entry["cache_creation_input_token_cost"] * 1e6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("m=1,2", Prices(1, 2)),
        ("openai/m=1.25,10,0.125", Prices(1.25, 10, 0.125)),
        ("anthropic/m=3,15,0.3,3.75", Prices(3, 15, 0.3, 3.75)),
    ],
)
def test_price_takes_optional_cache_rates(text: str, expected: Prices) -> None:
    assert parse_price(text) == (text.split("=")[0], expected)


@pytest.mark.parametrize("text", ["m=1", "m=1,2,3,4,5", "m=1,x", "m=1,2,-0.1", "=1,2", "m=1,2,nan", "m"])
def test_a_malformed_price_is_one_line(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_price(text)
    assert "\n" not in str(caught.value) and text in str(caught.value)


def test_prices_given_as_lists_are_checked() -> None:
    built = ModelConfig.build("openai/m", api_base="http://127.0.0.1:9/v1", prices={"openai/m": [3, 15, 0.3, 3.75]})
    assert built.price() == Prices(3.0, 15.0, 0.3, 3.75)
    assert ModelConfig.build("openai/m", prices={"openai/m": (1, 2, 0.5)}).price() == Prices(1.0, 2.0, 0.5)
    for bad, words in (([1], "[input, output]"), ([1, 2, 3, 4, 5], "[input, output]"), ([1, 2, "a"], "cache-read")):
        with pytest.raises(InputError, match=words.replace("[", r"\[")):
            ModelConfig.build("openai/m", prices={"openai/m": bad})
    with pytest.raises(InputError, match="cache-write price of openai/m must be a number of at least 0"):
        ModelConfig.build("openai/m", prices={"openai/m": [1, 2, 0.1, -1]})


def test_the_engine_bills_each_answer_at_its_cache_rates() -> None:
    # Keep the gate's and engine's contract: a cost function of Usage alone.
    cost = cost_function(Prices(3.0, 15.0, 0.30, 3.75))
    assert cost is not None

    async def answer(request: Request) -> Response:
        return Response("ok", usage=CACHED)

    async def scenario() -> list[float | None]:
        engine = Engine(FunctionBackend(answer), cost=cost)
        requests = [Request.from_prompt(i, f"q{i}") for i in range(3)]
        results = [r.cost_usd async for r in engine.results(requests)]
        stats = engine.stats()
        assert (stats.cache_read_tokens, stats.cache_write_tokens) == (18_000, 6_000)
        assert stats.cost_usd == pytest.approx(3 * 0.0303)
        return results

    assert asyncio.run(scenario()) == [pytest.approx(0.0303)] * 3


def test_the_cli_and_a_models_file_take_cache_rates(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": "x" * 400, "max_tokens": 10}) + "\n" for i in range(5)))
    base = ("run", str(source), "-o", str(tmp_path / "out.jsonl"), "--dry-run")
    given = run_cli(*base, "-m", "openai/a", "--api-base", "http://127.0.0.1:9/v1", "--price", "openai/a=1,2,0.1,1.25")
    assert given.returncode == 0, given.stderr
    refused = run_cli(*base, "-m", "openai/a", "--price", "openai/a=1,2,0.1,1.25,9")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "CACHE_READ" in refused.stderr
    models = tmp_path / "models.toml"
    models.write_text('[[model]]\nname = "openai/b"\napi_base = "http://127.0.0.1:9/v1"\nprice = [1, 2, 0.1, 1.25]\n')
    from_file = run_cli(*base, "--models", str(models))
    assert from_file.returncode == 0, from_file.stderr
    models.write_text('[[model]]\nname = "openai/b"\nprice = [1, 2, 0.1, -1.25]\n')
    bad_file = run_cli(*base, "--models", str(models))
    assert bad_file.returncode == 2 and "cache-write price of openai/b" in bad_file.stderr, bad_file.stderr


def test_a_price_given_for_an_anthropic_model_without_cache_rates_gets_anthropics() -> None:
    # --price anthropic/m=1,2 billed cache reads at the whole input rate: seven times too much.
    prices = ModelConfig.build("anthropic/m", api_key="k", prices={"anthropic/m": [1.0, 2.0]}).price()
    assert prices is not None
    usage = Usage(prompt_tokens=1_000_000, cache_read_tokens=900_000, cache_write_tokens=100_000)
    assert prices.cost_usd(usage) == pytest.approx(0.9 * 0.1 + 0.1 * 1.25)
    openai = ModelConfig.build("openai/m", api_key="k", prices={"openai/m": [1.0, 2.0]}).price()
    assert openai is not None and openai.cost_usd(usage) == pytest.approx(1.0)  # no rule known: the input rate
