"""Re-running a finished batch with the response cache on: it must send nothing and take under 10% of the time.

A batch of prompts at temperature 0 runs once without a cache, then once with `--cache` and again with
the same cache into a new output: in an SQLite file, and (with `--redis`) in a real redis-server started
here. The provider counts what each run sent; the CPU column is the run's process, user and system, so
that the cost of looking answers up shows beside a run that looks up nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common import BENCH_ENV, HERE, children_cpu, print_table, start_server

sys.path.insert(0, str(HERE.parent / "tests"))
from redis_server import RedisServer  # the tests' own: a real redis-server on a free port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--redis", action="store_true", help="also a cache in a redis-server started here")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    server, url = start_server(["--latency", str(args.latency)])
    rows: list[tuple[str, ...]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "in.jsonl"
            source.write_text(
                "".join(
                    json.dumps({"id": i, "prompt": f"cached bench prompt {i}", "temperature": 0}) + "\n"
                    for i in range(args.prompts)
                )
            )
            bench = Bench(args, url, source, Path(tmp))
            reference = bench.row("no cache", [])
            rows.append(reference.cells(reference))
            caches = [("SQLite", str(Path(tmp) / "cache.sqlite"))]
            redis = RedisServer(Path(tmp)).start() if args.redis else None
            if redis is not None:
                caches.append(("Redis", redis.url))
            try:
                for kind, where in caches:
                    first = bench.row(f"{kind}: first run", ["--cache", where])
                    rows += [first.cells(reference), bench.row(f"{kind}: re-run", ["--cache", where]).cells(first)]
            finally:
                if redis is not None:
                    redis.stop()
    finally:
        server.terminate()
        server.wait()
    header = ("run", "succeeded", "from the cache", "requests sent", "wall s", "CPU s", "wall vs", "CPU vs")
    print_table(header, rows, markdown=args.markdown)


@dataclass
class Row:
    name: str
    succeeded: int
    total: int
    cached: int
    sent: int
    wall_s: float
    cpu_s: float

    def cells(self, against: Row) -> tuple[str, ...]:
        """Against the run to compare it with: a first run with the run without a cache, a re-run with the
        first run that filled its cache."""
        return (
            self.name,
            f"{self.succeeded}/{self.total}",
            str(self.cached),
            str(self.sent),
            f"{self.wall_s:.2f}",
            f"{self.cpu_s:.2f}",
            f"{self.wall_s / against.wall_s:.3f}",
            f"{self.cpu_s / against.cpu_s:.3f}",
        )


@dataclass
class Bench:
    args: argparse.Namespace
    url: str
    source: Path
    folder: Path
    runs: int = 0
    sent_before: int = 0

    def row(self, name: str, flags: list[str]) -> Row:
        self.runs += 1
        out = self.folder / f"out-{self.runs}.jsonl"
        command = [sys.executable, "-m", "llmgather", "run", str(self.source), "-o", str(out), "--quiet"]
        command += ["-m", "openai/fake", "--api-base", self.url, "--concurrency", str(self.args.concurrency)]
        cpu_before, started = children_cpu(), time.perf_counter()
        subprocess.run([*command, *flags], env=BENCH_ENV, check=True)
        wall, cpu = time.perf_counter() - started, children_cpu() - cpu_before
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/_fake/stats") as response:
            sent = json.load(response)["requests"]
        sent, self.sent_before = sent - self.sent_before, sent
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        ok, cached = sum(line["error"] is None for line in lines), sum(line["cached"] for line in lines)
        return Row(name, ok, self.args.prompts, cached, sent, wall, cpu)


if __name__ == "__main__":
    main()
