"""Two models on the same prompts, side by side: success, latency and tokens per model."""

from __future__ import annotations

import asyncio
import statistics

from _provider import provider

import llmgather


async def compare(prompts: list[str], models: list[str], api_base: str | None, api_key: str | None) -> None:
    # One call fans out: every prompt to every model, each under its own limits.
    results = await llmgather.gather(prompts, model=models, api_base=api_base, api_key=api_key, concurrency=20)
    by_model = {model: [r for r in results if r.model == model] for model in models}
    for model, mine in by_model.items():
        ok = [r for r in mine if r.ok]
        tokens = sum(r.usage.total_tokens for r in ok if r.usage)
        median = statistics.median(r.latency_s for r in ok) if ok else float("nan")
        print(f"{model:24} {len(ok)}/{len(mine)} ok  median latency {median * 1000:.0f} ms  {tokens} tokens")
    print(f"first prompt, side by side: {prompts[0]!r}")
    for model, mine in by_model.items():
        print(f"  {model:24} {mine[0].content}")


def main() -> None:
    prompts = [f"In one sentence, why is the sky blue? (variant {i})" for i in range(50)]
    with provider("--latency", "0.05", "--jitter", "0.1") as where:
        asyncio.run(compare(prompts, where.models, where.api_base, where.api_key))


if __name__ == "__main__":
    main()
