"""Twenty agents converse in turns through one shared Client, under one set of limits."""

from __future__ import annotations

import asyncio

from _provider import provider

import llmgather


async def agent(client: llmgather.Client, name: int, turns: int) -> int:
    history: list[dict[str, str]] = [{"role": "system", "content": f"You are agent {name}. Be brief."}]
    for turn in range(turns):
        history.append({"role": "user", "content": f"Turn {turn}: what should we do next?"})
        reply = await client.complete(history)
        history.append({"role": "assistant", "content": reply.content or ""})
    return len(history)


async def main_async(model: str, api_base: str | None, api_key: str | None) -> None:
    async with llmgather.Client(model, api_base=api_base, api_key=api_key, concurrency=8, rpm=3000) as client:
        lengths = await asyncio.gather(*(agent(client, n, turns=5) for n in range(20)))
        stats = client.stats()
    print(
        f"20 agents, {sum(lengths)} messages in all; {stats.succeeded} requests answered, "
        f"{stats.retries} retries, p50 latency {1000 * (stats.latency_p50_s or 0):.0f} ms"
    )


def main() -> None:
    with provider("--latency", "0.05") as where:
        asyncio.run(main_async(where.models[0], where.api_base, where.api_key))


if __name__ == "__main__":
    main()
