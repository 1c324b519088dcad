"""What the bench scripts share: a fake provider per measurement, each tool as its own process, the table."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALTERNATIVES = ("aiohttp", "openai", "litellm")
# LiteLLM otherwise fetches its price map from GitHub at import, retrying for seconds with no network:
# that would be measured against it, though a user with a network would not wait for it.
BENCH_ENV = {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k", "PATH": "", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


@dataclass
class Measured:
    ok: int
    failed: int
    wall_s: float
    cpu_s: float
    server: dict[str, object]


def write_prompts(path: Path, prompts: Sequence[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    return path


def start_server(args: Sequence[str]) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "llmgather.fake", "--port", "0", *args], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    return server, server.stdout.readline().split()[-1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    tool: str,
    server_args: Sequence[str],
    prompts: Path,
    workdir: Path,
    *,
    concurrency: int,
    timeout_s: float,
    llmgather_args: Sequence[str] = (),
    model: str = "openai/fake",
) -> Measured:
    """Run one tool over `prompts` against a fresh fake provider; count what it and the provider saw."""
    server, url = start_server(server_args)
    try:
        if tool == "llmgather":
            out = workdir / "out.jsonl"
            command = [
                *(sys.executable, "-m", "llmgather", "run", str(prompts), "-o", str(out), "--overwrite"),
                *("-m", model, "--api-base", url, "--api-key-env", "OPENAI_API_KEY", "--quiet"),
                *("--concurrency", str(concurrency), "--timeout", str(timeout_s), *llmgather_args),
            ]
        else:
            command = [sys.executable, str(HERE / "alternatives.py"), tool, url, str(prompts)]
            command += [str(concurrency), str(timeout_s)]
        cpu_before, started = children_cpu(), time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=BENCH_ENV)
        wall, cpu = time.perf_counter() - started, children_cpu() - cpu_before
        if tool == "llmgather":
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            ok = sum(row["error"] is None for row in rows)
            failed = len(prompts.read_text().splitlines()) - ok
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


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
