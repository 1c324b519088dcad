"""The usual recipes, each run as its own process by the bench: `python alternatives.py NAME URL PROMPTS CONC TIMEOUT`.

PROMPTS is a JSONL file of {"id", "prompt"} lines, the same one llmgather reads. Prints one JSON line: how
many prompts succeeded and failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable


def read_prompts(path: str) -> list[str]:
    with open(path) as lines:
        return [json.loads(line)["prompt"] for line in lines]


async def raw_aiohttp(url: str, prompts: list[str], concurrency: int, timeout_s: float) -> tuple[int, int]:
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)
    ok = failed = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def one(prompt: str) -> None:
            nonlocal ok, failed
            body = {"model": "fake", "messages": [{"role": "user", "content": prompt}]}
            async with semaphore:
                try:
                    async with session.post(
                        url + "/chat/completions", json=body, headers={"Authorization": "Bearer k"}
                    ) as response:
                        data = await response.json()
                        if response.status == 200 and data["choices"][0]["message"]["content"]:
                            ok += 1
                            return
                except Exception:
                    pass
                failed += 1

        await asyncio.gather(*(one(p) for p in prompts))
    return ok, failed


async def under_semaphore(
    call: Callable[[str], Awaitable[object]], prompts: list[str], concurrency: int
) -> tuple[int, int]:
    """The usual recipe: every prompt at once under asyncio.gather, a semaphore bounding what is in flight."""
    semaphore = asyncio.Semaphore(concurrency)
    ok = failed = 0

    async def one(prompt: str) -> None:
        nonlocal ok, failed
        async with semaphore:
            try:
                await call(prompt)
                ok += 1
            except Exception:
                failed += 1

    await asyncio.gather(*(one(p) for p in prompts))
    return ok, failed


async def openai_sdk(url: str, prompts: list[str], concurrency: int, timeout_s: float) -> tuple[int, int]:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=5, timeout=timeout_s)

    def call(prompt: str) -> Awaitable[object]:
        return client.chat.completions.create(model="fake", messages=[{"role": "user", "content": prompt}])

    try:
        return await under_semaphore(call, prompts, concurrency)
    finally:
        await client.close()


async def litellm_recipe(url: str, prompts: list[str], concurrency: int, timeout_s: float) -> tuple[int, int]:
    import litellm

    litellm.suppress_debug_info = True

    def call(prompt: str) -> Awaitable[object]:
        return litellm.acompletion(  # type: ignore[no-any-return]
            model="openai/fake",
            api_base=url,
            api_key="k",
            timeout=timeout_s,
            num_retries=3,
            messages=[{"role": "user", "content": prompt}],
        )

    return await under_semaphore(call, prompts, concurrency)


async def anthropic_sdk(url: str, prompts: list[str], concurrency: int, timeout_s: float) -> tuple[int, int]:
    import anthropic

    client = anthropic.AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="k", max_retries=5, timeout=timeout_s)

    def call(prompt: str) -> Awaitable[object]:
        return client.messages.create(
            model="fake", max_tokens=ANTHROPIC_MAX_TOKENS, messages=[{"role": "user", "content": prompt}]
        )

    try:
        return await under_semaphore(call, prompts, concurrency)
    finally:
        await client.close()


async def litellm_anthropic(url: str, prompts: list[str], concurrency: int, timeout_s: float) -> tuple[int, int]:
    import litellm

    litellm.suppress_debug_info = True

    def call(prompt: str) -> Awaitable[object]:
        return litellm.acompletion(  # type: ignore[no-any-return]
            model="anthropic/fake",
            api_base=url.removesuffix("/v1"),
            api_key="k",
            timeout=timeout_s,
            num_retries=3,
            max_tokens=ANTHROPIC_MAX_TOKENS,
            messages=[{"role": "user", "content": prompt}],
        )

    return await under_semaphore(call, prompts, concurrency)


# Anthropic requires max_tokens: every tool of the Anthropic bench asks for the same.
ANTHROPIC_MAX_TOKENS = 64
RECIPES = {
    "aiohttp": raw_aiohttp,
    "openai": openai_sdk,
    "litellm": litellm_recipe,
    "anthropic-sdk": anthropic_sdk,
    "litellm-anthropic": litellm_anthropic,
}

if __name__ == "__main__":
    name, url, path, concurrency, timeout = sys.argv[1:6]
    ok, failed = asyncio.run(RECIPES[name](url, read_prompts(path), int(concurrency), float(timeout)))
    print(json.dumps({"ok": ok, "failed": failed}))
