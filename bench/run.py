"""llmgather against the usual recipes, side by side, on the fake provider. `make bench` runs it.

Every tool runs as its own process (start-up included) against a fresh fake-provider process with the
same seed, so each sees the same latencies and faults. Figures are printed as ratios between tools
measured in this same run; nothing is compared with numbers from elsewhere.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLS = ("llmgather", "aiohttp", "openai", "litellm")


@dataclass
class Scenario:
    name: str
    prompts: int
    concurrency: int
    latency: float
    timeout: float = 30.0
    faults: tuple[str, ...] = ()


SCENARIOS_ALL = [
    Scenario("latency 0.2 s", 2000, 100, 0.2),
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


@dataclass
class Measured:
    ok: int
    failed: int
    wall_s: float
    cpu_s: float
    server: dict[str, object]


def start_server(scenario: Scenario) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "llmgather.fake", "--port", "0", "--latency", str(scenario.latency), *scenario.faults],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().split()[-1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(tool: str, scenario: Scenario, workdir: Path) -> Measured:
    server, url = start_server(scenario)
    try:
        if tool == "llmgather":
            source = workdir / f"prompts-{scenario.prompts}.jsonl"
            source.write_text(
                "".join(json.dumps({"id": i, "prompt": f"bench prompt {i}"}) + "\n" for i in range(scenario.prompts))
            )
            out = workdir / "out.jsonl"
            command = [
                sys.executable,
                "-m",
                "llmgather",
                "run",
                str(source),
                "-o",
                str(out),
                "--overwrite",
                "-m",
                "openai/fake",
                "--api-base",
                url,
                "--concurrency",
                str(scenario.concurrency),
                "--timeout",
                str(scenario.timeout),
                "--quiet",
            ]
        else:
            command = [
                sys.executable,
                str(HERE / "alternatives.py"),
                tool,
                url,
                str(scenario.prompts),
                str(scenario.concurrency),
                str(scenario.timeout),
            ]
        cpu_before, started = children_cpu(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={"OPENAI_API_KEY": "k", "PATH": ""})
        wall, cpu = time.perf_counter() - started, children_cpu() - cpu_before
        if tool == "llmgather":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            ok = sum(row["error"] is None for row in rows)
            failed = scenario.prompts - ok
        else:
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            ok, failed = summary["ok"], summary["failed"]
        with urllib.request.urlopen(url.removesuffix("/v1") + "/_fake/stats") as response:
            server_stats = json.load(response)
        return Measured(ok, failed, wall, cpu, server_stats)
    finally:
        server.terminate()
        server.wait()


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--scenarios", default="0,1,2", help="which scenarios, by index (default all)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    args = parser.parse_args()
    tools = args.tools.split(",")
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in [SCENARIOS_ALL[int(i)] for i in args.scenarios.split(",")]:
            results = {tool: measure(tool, scenario, Path(tmp)) for tool in tools}
            ours = results["llmgather"]
            bound = scenario.prompts * scenario.latency / scenario.concurrency
            for tool, m in results.items():
                answered_twice = m.server["answered_twice"]
                row = (
                    scenario.name,
                    tool,
                    f"{m.ok}/{scenario.prompts}",
                    str(m.server["requests"]),
                    str(answered_twice),
                    f"{m.wall_s:.2f}",
                    f"{bound / m.wall_s:.2f}" if bound else "-",
                    f"{m.cpu_s / scenario.prompts * 1000:.3f}",
                    "1.00x" if tool == "llmgather" else ratio(m.cpu_s, ours.cpu_s),
                    "1.00x" if tool == "llmgather" else ratio(m.wall_s, ours.wall_s),
                )
                rows.append(row)
                print(" | ".join(row), file=sys.stderr, flush=True)
    header = (
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
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
