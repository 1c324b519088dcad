"""`make demo`: run examples/prompts.jsonl through llmgather with a live view, write results.jsonl, summarize.

Without OPENAI_API_KEY it runs all 600 prompts against the built-in fake provider (latency, jitter, a
rate limit and a few faults, so that retries show). With a key it sends the first 20 to openai/gpt-5-mini.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _provider import provider

PROMPTS = Path(__file__).resolve().parent / "prompts.jsonl"
FAKE = ("--latency", "0.2", "--jitter", "0.3", "--rpm", "12000", "--fail-rate", "0.03", "--drop-rate", "0.01")


def main() -> int:
    with provider(*FAKE) as where:
        source = str(PROMPTS)
        if not where.fake:  # a real provider costs money: a small taste only
            source = "first-20-prompts.jsonl"
            Path(source).write_text("".join(PROMPTS.read_text().splitlines(keepends=True)[:20]))
        command = [
            sys.executable,
            "-m",
            "llmgather",
            "run",
            source,
            "-o",
            "results.jsonl",
            "--overwrite",
            "-m",
            where.models[0],
            "--concurrency",
            "64",
            "--rpm",
            "12000" if where.fake else "500",
        ]
        if where.api_base:
            command += ["--api-base", where.api_base]
        code = subprocess.run(command, env={**os.environ, "OPENAI_API_KEY": where.api_key or ""}).returncode
    first = Path("results.jsonl").read_text().splitlines()[0]
    print(f"\nresults.jsonl holds one line per prompt; the first:\n{first}")
    return code


if __name__ == "__main__":
    sys.exit(main())
