"""Re-running a finished batch with the response cache on: it must send nothing and take under 10% of the time.

A batch of prompts at temperature 0 runs once against the fake provider with `--cache`, then again with
the same cache into a new output. The provider counts what each run sent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import BENCH_ENV, print_table, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    server, url = start_server(["--latency", str(args.latency)])
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source, cache = Path(tmp) / "in.jsonl", Path(tmp) / "cache.sqlite"
            source.write_text(
                "".join(
                    json.dumps({"id": i, "prompt": f"cached bench prompt {i}", "temperature": 0}) + "\n"
                    for i in range(args.prompts)
                )
            )
            sent_before, first_wall = 0, 0.0
            for name in ("first run", "re-run, cache on"):
                out = Path(tmp) / f"{name.split(',')[0].replace(' ', '-')}.jsonl"
                command = [sys.executable, "-m", "llmgather", "run", str(source), "-o", str(out), "--quiet"]
                command += ["-m", "openai/fake", "--api-base", url, "--concurrency", str(args.concurrency)]
                started = time.perf_counter()
                subprocess.run([*command, "--cache", str(cache)], env=BENCH_ENV, check=True)
                wall = time.perf_counter() - started
                with urllib.request.urlopen(url.removesuffix("/v1") + "/_fake/stats") as response:
                    sent = json.load(response)["requests"]
                lines = [json.loads(line) for line in out.read_text().splitlines()]
                cached = sum(line["cached"] for line in lines)
                first_wall = first_wall or wall
                rows.append(
                    (
                        name,
                        f"{sum(line['error'] is None for line in lines)}/{args.prompts}",
                        str(cached),
                        str(sent - sent_before),
                        f"{wall:.2f}",
                        f"{wall / first_wall:.3f}",
                    )
                )
                sent_before = sent
    finally:
        server.terminate()
        server.wait()
    header = ("run", "succeeded", "from the cache", "requests sent", "wall s", "wall vs first run")
    print_table(header, rows, markdown=args.markdown)


if __name__ == "__main__":
    main()
