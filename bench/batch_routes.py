"""One job of 1,000 prompts through three routes, against the same fake provider: what each costs and takes.

- online: every request through the chat completions endpoint, paced by a 6,000 rpm limit;
- batch: every request through the Batches API (`--batch`), batches that take `--batch-seconds`;
- batch --by: batches twice as slow, with `--by` at half their time: what they answered by then is kept, and
  the rest (about half) goes online.

Costs are the tool's own `cost_usd`, summed over the output, at one price for all three routes
(`PRICE`, per million input and output tokens, a gpt-5-mini-like price); the batch API bills half of it. The
wall times of the batch routes are the fake's clock, set here: real batches take from minutes to 24 hours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_ENV, print_table, ratio, start_server, write_prompts

PROMPTS = 1000
PRICE = "openai/fake=0.25,2"
HEADER = ("route", "answered", "through a batch", "online", "wall s", "cost USD", "cost / online")


def run_route(name: str, server_args: tuple[str, ...], llmgather_args: tuple[str, ...], prompts: Path, tmp: Path):
    server, url = start_server(server_args)
    out = tmp / f"{name.replace(' ', '_')}.jsonl"
    try:
        command = [
            *(sys.executable, "-m", "llmgather", "run", str(prompts), "-o", str(out), "--overwrite", "--quiet"),
            *("-m", "openai/fake", "--api-base", url, "--api-key-env", "OPENAI_API_KEY", "--price", PRICE),
            *llmgather_args,
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=BENCH_ENV, timeout=600)
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait()
    if done.returncode != 0:
        sys.exit(f"{name}: exit {done.returncode}: {done.stderr.strip()}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    answered = sum(row["error"] is None for row in rows)
    batched = sum(row.get("lane") == "batch" for row in rows)
    online = len(rows) - batched
    cost = sum(row["cost_usd"] or 0.0 for row in rows)
    return answered, batched, online, wall, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--batch-seconds", type=float, default=20.0, help="how long the fake's batches take")
    args = parser.parse_args()
    slow = 2 * args.batch_seconds
    routes = (
        ("online", ("--latency", "0.5", "--rpm", "6000"), ("--concurrency", "100")),
        ("batch", ("--batch-seconds", f"{args.batch_seconds:g}"), ("--batch",)),
        (
            f"batch --by {args.batch_seconds:g}s",
            ("--latency", "0.5", "--rpm", "6000", "--batch-seconds", f"{slow:g}"),
            ("--batch", "--by", f"{args.batch_seconds:g}s", "--concurrency", "100"),
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        prompts = write_prompts(Path(tmp) / "prompts.jsonl", [f"bench prompt {i}" for i in range(PROMPTS)])
        measured = {name: run_route(name, server, ours, prompts, Path(tmp)) for name, server, ours in routes}
    online_cost = measured["online"][4]
    rows = [
        (name, f"{a}/{PROMPTS}", str(b), str(o), f"{wall:.1f}", f"{cost:.4f}", ratio(cost, online_cost))
        for name, (a, b, o, wall, cost) in measured.items()
    ]
    print_table(HEADER, rows, markdown=args.markdown)


if __name__ == "__main__":
    main()
