"""Under a provider's rate limits: llmgather told the limits, llmgather learning them, and the usual recipes.

Each tool runs as its own process against a fresh fake provider that enforces the limits over a sliding
minute and, quantized, over every second, as providers do. The bound is the fastest any client could go
under those limits: prompts / request rate, or the tokens the provider counts / token rate, whichever is
longer. Targets: every prompt succeeds; told the limits, within 5% of the bound with at most 1% of
requests refused (429); learning them from the headers, within 15% with at most 3%.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import ALTERNATIVES, Measured, measure, print_table, ratio, write_prompts

from llmgather.fake.server import count_tokens

FAKE_COMPLETION_TOKENS = 16  # what the fake provider answers and counts when no max_tokens is given


@dataclass
class Scenario:
    name: str
    prompts: list[str]
    rpm: int
    tpm: int | None
    concurrency: int
    latency: float = 0.3

    def server_args(self) -> tuple[str, ...]:
        tpm = ("--tpm", str(self.tpm)) if self.tpm else ()
        return ("--rpm", str(self.rpm), *tpm, "--latency", str(self.latency))

    def told(self) -> tuple[str, ...]:
        return ("--rpm", str(self.rpm), *(("--tpm", str(self.tpm)) if self.tpm else ()))

    def bound_s(self) -> float:
        by_requests = len(self.prompts) / (self.rpm / 60)
        if self.tpm is None:
            return by_requests
        tokens = sum(count_tokens(p) + FAKE_COMPLETION_TOKENS for p in self.prompts)
        return max(by_requests, tokens / (self.tpm / 60))


def mixed_prompts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "model",
        "answer",
        "question",
        "limit",
        "token",
        "rate",
        "provider",
        "minute",
        "second",
        "request",
    ]
    prompts = []
    for i in range(n):
        text = f"question {i}:"
        length = rng.randint(40, 1000)
        while len(text) < length:
            text += " " + rng.choice(words)
        prompts.append(text[:length])
    return prompts


SCENARIOS_ALL = [
    Scenario("(a) 6,000 rpm, 0.3 s, c=200", [f"bench prompt {i}" for i in range(3000)], 6000, None, 200),
    Scenario("(b) 10,000 rpm + 400,000 tpm, 40-1,000 chars", mixed_prompts(2000), 10_000, 400_000, 50),
]
TARGETS = {"llmgather told": (1.05, 0.01), "llmgather learning": (1.15, 0.03)}
HEADER = (
    "scenario",
    "tool",
    "succeeded",
    "requests sent",
    "429s",
    "429s / requests",
    "wall s",
    "bound s",
    "wall / bound",
    "wall vs llmgather told",
    "target",
)


def run_scenario(scenario: Scenario, tools: list[str], workdir: Path) -> dict[str, Measured]:
    prompts = write_prompts(workdir / "prompts.jsonl", scenario.prompts)
    results = {}
    for tool in tools:
        variants = {"llmgather told": scenario.told(), "llmgather learning": ()} if tool == "llmgather" else {tool: ()}
        for name, told in variants.items():
            results[name] = measure(
                "llmgather" if name.startswith("llmgather") else tool,
                scenario.server_args(),
                prompts,
                workdir,
                concurrency=scenario.concurrency,
                timeout_s=30.0,
                llmgather_args=told,
            )
            print(f"{scenario.name} | {name} | {describe(results[name])}", file=sys.stderr, flush=True)
    return results


def describe(m: Measured) -> str:
    return f"ok {m.ok} failed {m.failed} wall {m.wall_s:.2f} s server {m.server}"


def row(scenario: Scenario, name: str, m: Measured, reference: Measured | None) -> tuple[str, ...]:
    requests = int(str(m.server["requests"]))
    refused = int(str(m.server["rate_limited"]))
    share = refused / requests if requests else 0.0
    over = m.wall_s / scenario.bound_s()
    target = "-"
    if name in TARGETS:
        wall_target, share_target = TARGETS[name]
        met = m.failed == 0 and over <= wall_target and share <= share_target
        target = f"{'met' if met else 'MISSED'} (≤{wall_target:.2f}, ≤{share_target:.0%})"
    return (
        scenario.name,
        name,
        f"{m.ok}/{len(scenario.prompts)}",
        str(requests),
        str(refused),
        f"{share:.1%}",
        f"{m.wall_s:.2f}",
        f"{scenario.bound_s():.2f}",
        f"{over:.3f}",
        ratio(m.wall_s, reference.wall_s) if reference else "-",
        target,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tools", default=",".join(("llmgather", *ALTERNATIVES)))
    parser.add_argument("--scenarios", default="0,1", help="which scenarios, by index (default all)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in [SCENARIOS_ALL[int(i)] for i in args.scenarios.split(",")]:
            results = run_scenario(scenario, args.tools.split(","), Path(tmp))
            reference = results.get("llmgather told")
            rows += [row(scenario, name, m, reference) for name, m in results.items()]
    print_table(HEADER, rows, markdown=args.markdown)


if __name__ == "__main__":
    main()
