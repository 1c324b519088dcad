"""Peak resident memory of `llmgather run` over a very large input (default 1,000,000 lines), zero latency.

The target: under 200 MB resident, because memory grows with concurrency, not with the number of prompts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "llmgather.fake", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    url = server.stdout.readline().split()[-1]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source, out = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
            with source.open("w") as f:
                for i in range(args.lines):
                    f.write(json.dumps({"id": i, "prompt": f"memory prompt number {i}"}) + "\n")
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "llmgather",
                    "run",
                    str(source),
                    "-o",
                    str(out),
                    "-m",
                    "openai/fake",
                    "--api-base",
                    url,
                    "--concurrency",
                    str(args.concurrency),
                    "--quiet",
                ],
                capture_output=True,
                text=True,
                env={"OPENAI_API_KEY": "k", "PATH": ""},
            )
            wall = time.perf_counter() - started
            # The peak of every child waited for so far, and llmgather's run is the only one: the fake
            # provider is still running. (The run leaves with os._exit, so it cannot report this itself.)
            rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            with out.open() as f:
                written = sum(1 for _ in f)
    finally:
        server.terminate()
        server.wait()
    print(
        f"{args.lines:,} lines, concurrency {args.concurrency}: {written:,} results in {wall:.0f} s, "
        f"peak resident {rss_kb / 1024:.0f} MB (target < 200 MB), exit {done.returncode}"
    )


if __name__ == "__main__":
    main()
