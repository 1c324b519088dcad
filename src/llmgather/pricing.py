"""Cost per model: US dollars per million prompt and completion tokens.

Prices come from, in order: the user (`--price MODEL=IN,OUT`), LiteLLM's price map when LiteLLM is installed
(read from the JSON file it ships, without importing LiteLLM, which takes seconds), and a small bundled table.
A model served at an endpoint of the user's own (`--api-base`) is priced only by the user and the bundled
table: LiteLLM's map describes the providers' own endpoints, and reading it costs every run 50 ms.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping

from llmgather.errors import InputError
from llmgather.litellm_files import litellm_file
from llmgather.types import Usage

# A small bundled table for common models (list prices, USD per million tokens: prompt, completion).
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "o3": (2.0, 8.0),
    "o4-mini": (1.10, 4.40),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-opus-4-1": (15.0, 75.0),
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
}


Prices = tuple[float, float]
"""USD per million tokens: (prompt, completion)."""


def parse_price(text: str) -> tuple[str, Prices]:
    """`MODEL=IN,OUT` (USD per million prompt and completion tokens), as `--price` takes it."""
    model, _, numbers = text.partition("=")
    try:
        prompt, completion = (float(n) for n in numbers.split(","))
    except ValueError:
        raise InputError(
            f"--price {text!r}: expected MODEL=IN,OUT in USD per million tokens, e.g. gpt-5=1.25,10"
        ) from None
    if not model or prompt < 0 or completion < 0:
        raise InputError(f"--price {text!r}: expected MODEL=IN,OUT with prices of 0 or more")
    return model, (prompt, completion)


def price_of(
    model: str, overrides: Mapping[str, Prices] | None = None, *, provider_endpoint: bool = True
) -> Prices | None:
    """Prices for `provider/name` or `name`, matching a dated snapshot (`gpt-4o-2024-08-06`) to its family."""
    name = model.rsplit("/", 1)[-1]
    for key in (model, name):
        if overrides and key in overrides:
            return overrides[key]
    for key in (model, name) if provider_endpoint else ():
        known = _litellm_prices().get(key)
        if known is not None:
            return known
    if name in PRICES_PER_MTOK:
        return PRICES_PER_MTOK[name]
    family = max((known for known in PRICES_PER_MTOK if name.startswith(known + "-")), key=len, default=None)
    return PRICES_PER_MTOK[family] if family is not None else None


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
        prompt, completion = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        if isinstance(prompt, int | float) and isinstance(completion, int | float):
            prices[model] = (prompt * 1e6, completion * 1e6)
    return prices


def cost_function(prices: Prices | None) -> Callable[[Usage], float] | None:
    if prices is None:
        return None
    return lambda usage: cost_usd(prices, usage.prompt_tokens, usage.completion_tokens)


def cost_usd(prices: Prices, prompt_tokens: int, completion_tokens: int) -> float:
    return round((prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6, 8)
