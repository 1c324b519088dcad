"""Cost per model as the provider bills it: US dollars per million input, output, cache-read and cache-write
tokens.

Prices come from, in order: the user (`--price MODEL=IN,OUT[,CACHE_READ[,CACHE_WRITE]]`), LiteLLM's price map
when LiteLLM is installed (read from the JSON file it ships, without importing LiteLLM, which takes seconds),
and a small bundled table. A model served at an endpoint of the user's own (`--api-base`) is priced only by
the user and the bundled table: LiteLLM's map describes the providers' own endpoints, and reading it costs
every run 50 ms.

Cached input is billed apart: OpenAI and Gemini bill tokens read from the prompt cache at a fraction of the
input rate, Anthropic bills reads at 0.1x and writes (five-minute cache) at 1.25x. A model without a cache rate
has its cached tokens priced at its input rate, but for Anthropic's, whose multipliers are the same for all.

The batch APIs bill every token at a share of the online rate (`BATCH_SHARE`): half, at OpenAI, Anthropic
and Google alike.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmgather.errors import InputError
from llmgather.litellm_files import litellm_file
from llmgather.types import Usage


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens. A cache rate of None is the input rate."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost_usd(self, usage: Usage) -> float:
        """uncached input x input + cache reads x read + cache writes x write + completion x output."""
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        micro = (
            usage.uncached_prompt_tokens * self.input
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
            + usage.completion_tokens * self.output
        )
        return round(micro / 1e6, 8)

    def scaled(self, share: float) -> Prices:
        """Every rate times `share` (a batch discount)."""
        read = None if self.cache_read is None else self.cache_read * share
        write = None if self.cache_write is None else self.cache_write * share
        return Prices(self.input * share, self.output * share, read, write)


# A small bundled table for common models: list prices, USD per million tokens (input, output, cache read,
# cache write). OpenAI bills no cache write; Gemini's implicit caching neither (its explicit cache's storage
# is billed by the hour, outside any request).
PRICES_PER_MTOK: dict[str, Prices] = {
    "gpt-5": Prices(1.25, 10.0, 0.125),
    "gpt-5-mini": Prices(0.25, 2.0, 0.025),
    "gpt-5-nano": Prices(0.05, 0.40, 0.005),
    "gpt-4.1": Prices(2.0, 8.0, 0.50),
    "gpt-4.1-mini": Prices(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Prices(0.10, 0.40, 0.025),
    "gpt-4o": Prices(2.50, 10.0, 1.25),
    "gpt-4o-mini": Prices(0.15, 0.60, 0.075),
    "o3": Prices(2.0, 8.0, 0.50),
    "o4-mini": Prices(1.10, 4.40, 0.275),
    "claude-sonnet-4-5": Prices(3.0, 15.0, 0.30, 3.75),
    "claude-haiku-4-5": Prices(1.0, 5.0, 0.10, 1.25),
    "claude-opus-4-1": Prices(15.0, 75.0, 1.50, 18.75),
    "gemini-2.5-pro": Prices(1.25, 10.0, 0.125),
    "gemini-2.5-flash": Prices(0.30, 2.50, 0.03),
}

BATCH_SHARE: dict[str, float] = {"openai": 0.5, "anthropic": 0.5, "gemini": 0.5, "hosted_vllm": 1.0}
"""What each provider's batch API bills, as a share of its online price (a server of your own bills nothing
less for a batch). Cache reads and writes in a batch get the same share."""


def batch_prices(model: str, prices: Prices | None) -> Prices | None:
    """`prices` as billed through the provider's batch API."""
    if prices is None:
        return None
    return prices.scaled(BATCH_SHARE.get(model.split("/", 1)[0], 1.0))


PRICE_FORM = "MODEL=IN,OUT[,CACHE_READ[,CACHE_WRITE]] in USD per million tokens, e.g. gpt-5=1.25,10,0.125"


def parse_price(text: str) -> tuple[str, Prices]:
    """`MODEL=IN,OUT[,CACHE_READ[,CACHE_WRITE]]` (USD per million tokens), as `--price` takes it."""
    model, _, numbers = text.partition("=")
    try:
        values = [float(n) for n in numbers.split(",")]
    except ValueError:
        values = []
    if not model or not 2 <= len(values) <= 4:
        raise InputError(f"--price {text!r}: expected {PRICE_FORM}")
    if any(not 0 <= v < float("inf") for v in values):
        raise InputError(f"--price {text!r}: prices must be numbers of 0 or more")
    return model, Prices(*values)


def price_of(
    model: str, overrides: Mapping[str, Prices] | None = None, *, provider_endpoint: bool = True
) -> Prices | None:
    """Prices for `provider/name` or `name`, matching a dated snapshot (`gpt-4o-2024-08-06`) to its family."""
    name = model.rsplit("/", 1)[-1]
    for key in (model, name):
        if overrides and key in overrides:
            given = overrides[key]
            return _anthropic_cache_rates(given) if model.startswith("anthropic/") else given
    for key in (model, name) if provider_endpoint else ():
        known = _litellm_prices().get(key)
        if known is not None:
            return known
    if name in PRICES_PER_MTOK:
        return PRICES_PER_MTOK[name]
    family = max((known for known in PRICES_PER_MTOK if name.startswith(known + "-")), key=len, default=None)
    return PRICES_PER_MTOK[family] if family is not None else None


ANTHROPIC_CACHE_READ, ANTHROPIC_CACHE_WRITE = 0.1, 1.25
"""Anthropic bills every model's cache reads and (five-minute) cache writes at these shares of its input rate."""


def _anthropic_cache_rates(prices: Prices) -> Prices:
    """A price given for an Anthropic model with its cache rates left out gets Anthropic's, not the input rate."""
    read = prices.input * ANTHROPIC_CACHE_READ if prices.cache_read is None else prices.cache_read
    write = prices.input * ANTHROPIC_CACHE_WRITE if prices.cache_write is None else prices.cache_write
    return Prices(prices.input, prices.output, read, write)


@functools.cache
def _litellm_prices() -> dict[str, Prices]:
    path = litellm_file("model_prices_and_context_window_backup.json")
    if path is None:
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    prices = {}
    for model, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("mode", "chat") != "chat":
            continue
        prompt, completion = _per_mtok(entry, "input_cost_per_token"), _per_mtok(entry, "output_cost_per_token")
        if prompt is not None and completion is not None:
            read = _per_mtok(entry, "cache_read_input_token_cost")
            write = _per_mtok(entry, "cache_creation_input_token_cost")
            prices[model] = Prices(prompt, completion, read, write)
    return prices


def _per_mtok(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get(key)
    return value * 1e6 if isinstance(value, int | float) and not isinstance(value, bool) else None


def cost_function(prices: Prices | None) -> Callable[[Usage], float] | None:
    return None if prices is None else prices.cost_usd
