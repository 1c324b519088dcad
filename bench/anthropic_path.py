"""(Named so as not to shadow the `anthropic` package the recipes import.)

The Anthropic path side by side: llmgather's native backend, the official `anthropic` SDK under a semaphore,
and `litellm.acompletion("anthropic/...")` under a semaphore, against the same fake provider's `/v1/messages`.

(1) CPU: 5,000 requests at zero latency; CPU per request, start-up included, as ratios to llmgather's. Each
    tool runs `--repeat` times (3) and its least CPU counts, as timeit does: on a shared virtual machine the
    same run's CPU varied by up to 1.7x from one try to the next, and only the least is the tool's own.
(2) Limits: 2,000 requests under Anthropic's three limits at once (requests, input tokens and output tokens
    per minute, each enforced over a sliding minute and quantized per second, output reserved at max_tokens as
    Anthropic does). The bound is the slowest of the three: requests / rpm, input tokens / itpm,
    output tokens reserved / otpm. Targets: every prompt answered, wall at most 1.05 x the bound, at most 1% of
    requests refused.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from alternatives import ANTHROPIC_MAX_TOKENS
from common import Measured, measure, print_table, ratio
from limits import mixed_prompts

from llmgather.fake.server import count_tokens

TOOLS = ("llmgather", "anthropic-sdk", "litellm-anthropic")
CPU_PROMPTS = 5000
LIMIT_PROMPTS = 2000
# Anthropic's tier-4 request limit (30 s for 2,000 requests), and token limits that the 2,000 mixed prompts use to
# 85% (either alone would take 25.5 s): all three are in force at once. When two tie exactly, neither can make up
# a second the other held back, and llmgather measured 1.07-1.10 x the bound here.
RPM, ITPM, OTPM = 4_000, 600_000, 300_000
HEADER = (
    "scenario",
    "tool",
    "succeeded",
    "requests",
    "429s",
    "wall s",
    "wall / bound",
    "CPU ms/request",
    "CPU ratio",
    "target",
)
CPU_TARGET_MS, CPU_TARGET_RATIO = 0.3, 10.0  # and at least this many times less CPU than LiteLLM's route
WALL_TARGET, REFUSED_TARGET = 1.05, 0.01


def write_requests(path: Path, prompts: list[str]) -> Path:
    import json

    lines = (json.dumps({"id": i, "prompt": p, "max_tokens": ANTHROPIC_MAX_TOKENS}) for i, p in enumerate(prompts))
    path.write_text("".join(line + "\n" for line in lines))
    return path


def bound_s(prompts: list[str]) -> float:
    by_requests = len(prompts) / (RPM / 60)
    by_input = sum(count_tokens(p) for p in prompts) / (ITPM / 60)
    by_output = len(prompts) * ANTHROPIC_MAX_TOKENS / (OTPM / 60)  # the fake answers all max_tokens
    return max(by_requests, by_input, by_output)


def run(tool: str, server_args: tuple[str, ...], prompts: Path, tmp: Path, told: tuple[str, ...] = ()) -> Measured:
    m = measure(
        tool, server_args, prompts, tmp, concurrency=100, timeout_s=30.0, llmgather_args=told, model="anthropic/fake"
    )
    print(f"{tool}: ok {m.ok} failed {m.failed} wall {m.wall_s:.2f} s cpu {m.cpu_s:.2f} s {m.server}", file=sys.stderr)
    return m


def table_row(
    scenario: str,
    tool: str,
    m: Measured,
    prompts: int,
    over_bound: str,
    cpu_ms: str = "-",
    cpu_ratio: str = "-",
    target: str = "-",
) -> tuple[str, ...]:
    requests, refused = int(str(m.server["requests"])), int(str(m.server["rate_limited"]))
    share = f"{refused} ({refused / max(1, requests):.1%})"
    cells = (f"{m.ok}/{prompts}", str(requests), share, f"{m.wall_s:.2f}", over_bound, cpu_ms, cpu_ratio, target)
    return (scenario, tool, *cells)


def cpu_target(cpu: dict[str, Measured]) -> str:
    ours, litellm = cpu.get("llmgather"), cpu.get("litellm-anthropic")
    if ours is None:
        return "-"
    met = ours.failed == 0 and ours.cpu_s / CPU_PROMPTS * 1000 <= CPU_TARGET_MS
    if litellm is not None:
        met = met and litellm.cpu_s >= CPU_TARGET_RATIO * ours.cpu_s
    return f"{'met' if met else 'MISSED'} (≤{CPU_TARGET_MS} ms, ≥{CPU_TARGET_RATIO:g}x less than LiteLLM)"


def limits_target(m: Measured, bound: float) -> str:
    requests, refused = int(str(m.server["requests"])), int(str(m.server["rate_limited"]))
    met = m.failed == 0 and m.wall_s / bound <= WALL_TARGET and refused <= REFUSED_TARGET * requests
    return f"{'met' if met else 'MISSED'} (≤{WALL_TARGET}, ≤{REFUSED_TARGET:.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool in (1); the least CPU counts")
    args = parser.parse_args()
    tools = args.tools.split(",")
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prompts = write_requests(work / "cpu.jsonl", [f"bench prompt {i}" for i in range(CPU_PROMPTS)])
        cpu = {
            tool: min((run(tool, ("--latency", "0"), prompts, work) for _ in range(args.repeat)), key=lambda m: m.cpu_s)
            for tool in tools
        }
        for tool, m in cpu.items():
            reference = cpu.get("llmgather")
            per_request = f"{m.cpu_s / CPU_PROMPTS * 1000:.3f}"
            cpu_ratio = ratio(m.cpu_s, reference.cpu_s) if reference else "-"
            target = cpu_target(cpu) if tool == "llmgather" else "-"
            row = table_row("(1) CPU, 5,000 at zero latency", tool, m, CPU_PROMPTS, "-", per_request, cpu_ratio, target)
            rows.append(row)
        texts = mixed_prompts(LIMIT_PROMPTS)
        prompts = write_requests(work / "limits.jsonl", texts)
        limits = ("--rpm", str(RPM), "--input-tpm", str(ITPM), "--output-tpm", str(OTPM))
        server_args = (*limits, "--latency", "0.3", "--completion-tokens", str(ANTHROPIC_MAX_TOKENS))
        bound = bound_s(texts)
        for tool in tools:
            m = run(tool, server_args, prompts, work, told=limits if tool == "llmgather" else ())
            target = limits_target(m, bound) if tool == "llmgather" else "-"
            over = f"{m.wall_s / bound:.3f}"
            rows.append(table_row("(2) rpm + itpm + otpm, 2,000", tool, m, LIMIT_PROMPTS, over, target=target))
    print(f"bound of (2): {bound:.2f} s", file=sys.stderr)
    print_table(HEADER, rows, markdown=args.markdown)


if __name__ == "__main__":
    main()
