"""A small benchmark evaluation: 100 arithmetic questions, scored by exact match.

Against the fake provider the answers are placeholders, so the accuracy is 0%: the point is the pipeline.
"""

from __future__ import annotations

import random

from _provider import provider

import llmgather


def main() -> None:
    rng = random.Random(0)
    questions = [(rng.randint(1, 99), rng.randint(1, 99)) for _ in range(100)]
    prompts = [
        {"id": f"add-{i}", "prompt": f"What is {a} + {b}? Answer with the number only.", "max_tokens": 8}
        for i, (a, b) in enumerate(questions)
    ]
    with provider("--latency", "0.05") as where:
        results = llmgather.run(
            prompts, model=where.models[0], api_base=where.api_base, api_key=where.api_key, concurrency=20
        )
    correct = sum(
        1 for r, (a, b) in zip(results, questions, strict=True) if r.ok and (r.content or "").strip() == str(a + b)
    )
    failed = sum(not r.ok for r in results)
    print(f"{len(results)} questions, {correct} correct ({correct / len(results):.0%}), {failed} failed")


if __name__ == "__main__":
    main()
