"""Cost per model: US dollars per million prompt and completion tokens."""

from __future__ import annotations

from collections.abc import Callable

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


def price_of(model: str) -> tuple[float, float] | None:
    """Prices for `provider/name` or `name`, matching a dated snapshot (`gpt-4o-2024-08-06`) to its family."""
    name = model.rsplit("/", 1)[-1]
    if name in PRICES_PER_MTOK:
        return PRICES_PER_MTOK[name]
    family = max((known for known in PRICES_PER_MTOK if name.startswith(known + "-")), key=len, default=None)
    return PRICES_PER_MTOK[family] if family is not None else None


def cost_function(model: str) -> Callable[[Usage], float] | None:
    prices = price_of(model)
    if prices is None:
        return None
    prompt_price, completion_price = prices[0] / 1e6, prices[1] / 1e6

    def cost(usage: Usage) -> float:
        return round(usage.prompt_tokens * prompt_price + usage.completion_tokens * completion_price, 8)

    return cost
