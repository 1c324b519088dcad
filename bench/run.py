"""llmgather against the usual recipes, side by side, on the fake provider. `make bench` runs it.

Every tool runs as its own process (start-up included) against a fresh fake-provider process with the
same seed, so each sees the same latencies and faults. Figures are printed as ratios between tools
measured in this same run; nothing is compared with numbers from elsewhere. `bench/limits.py` does the
same under rate limits, `bench/memory.py` measures memory over a million prompts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common import ALTERNATIVES, measure, print_table, ratio, write_prompts


@dataclass
class Scenario:
    name: str
    prompts: int
    concurrency: int
    latency: float
    timeout: float = 30.0
    faults: tuple[str, ...] = ()
    told: tuple[str, ...] = ()
    """Flags for llmgather alone (the recipes have no limits to be told)."""


SCENARIOS_ALL = [
    Scenario("latency 0.2 s", 2000, 100, 0.2),
    # Limits given far above the need must cost nothing: the run paces nowhere and waits for no first answer.
    Scenario("latency 0.2 s, --rpm/--tpm far above", 2000, 100, 0.2, told=("--rpm", "1000000", "--tpm", "1000000000")),
    Scenario("zero latency (CPU)", 5000, 100, 0.0),
    Scenario(
        "faults: 5% 5xx, 2% drops, 0.5% hangs",
        2000,
        100,
        0.1,
        timeout=5.0,
        faults=("--fail-rate", "0.05", "--drop-rate", "0.02", "--hang-rate", "0.005", "--seed", "11"),
    ),
]

HEADER = (
    "scenario",
    "tool",
    "succeeded",
    "requests sent",
    "answered twice",
    "wall s",
    "bound / wall",
    "CPU ms/request",
    "CPU vs llmgather",
    "wall vs llmgather",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tools", default=",".join(("llmgather", *ALTERNATIVES)))
    parser.add_argument("--scenarios", default="0,1,2,3", help="which scenarios, by index (default all)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    args = parser.parse_args()
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in [SCENARIOS_ALL[int(i)] for i in args.scenarios.split(",")]:
            prompts = write_prompts(Path(tmp) / "prompts.jsonl", [f"bench prompt {i}" for i in range(scenario.prompts)])
            server_args = ("--latency", str(scenario.latency), *scenario.faults)
            results = {
                tool: measure(
                    tool,
                    server_args,
                    prompts,
                    Path(tmp),
                    concurrency=scenario.concurrency,
                    timeout_s=scenario.timeout,
                    llmgather_args=scenario.told,
                )
                for tool in args.tools.split(",")
            }
            ours = results["llmgather"]
            bound = scenario.prompts * scenario.latency / scenario.concurrency
            for tool, m in results.items():
                row = (
                    scenario.name,
                    tool,
                    f"{m.ok}/{scenario.prompts}",
                    str(m.server["requests"]),
                    str(m.server["answered_twice"]),
                    f"{m.wall_s:.2f}",
                    f"{bound / m.wall_s:.2f}" if bound else "-",
                    f"{m.cpu_s / scenario.prompts * 1000:.3f}",
                    "1.00x" if tool == "llmgather" else ratio(m.cpu_s, ours.cpu_s),
                    "1.00x" if tool == "llmgather" else ratio(m.wall_s, ours.wall_s),
                )
                rows.append(row)
                print(" | ".join(row), file=sys.stderr, flush=True)
    print_table(HEADER, rows, markdown=args.markdown)


if __name__ == "__main__":
    main()
