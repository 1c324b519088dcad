"""Four processes, one provider quota, one Redis: llmgather --shared against LiteLLM's Router on the same Redis.

Each row starts four processes together, each with a quarter of the prompts, against one fresh fake provider
that enforces requests and tokens per minute (over a sliding minute and, quantized, every second, as providers
do), and one real redis-server started here on a free port, emptied before each row:
- llmgather --shared, told the limits; then learning them from the provider's headers (no --rpm/--tpm);
- LiteLLM's Router in each process: the deployment given the rpm and tpm, `usage-based-routing-v2` (the strategy
  that counts usage in Redis across instances), redis_host/redis_port, num_retries, under the usual recipe
  (asyncio.gather and a semaphore);
- for reference, llmgather without --shared, each process told the full limit (what issue 12 measured).
The bound is the fastest any client could go: prompts / rpm or counted tokens / tpm, whichever is longer, plus
one latency. "wall" runs from the start of the processes to the end of the last (their start-up included, as in
the other benches); "at provider" from the first answer the provider gave to its last, plus one latency.
Then the admission's own cost: one process, one request at a time at zero latency, with and without --shared.
Every process has a timeout and is killed (by its own pid) if it overruns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alternatives import under_semaphore
from common import BENCH_ENV, HERE, children_cpu, print_table, ratio, start_server, write_prompts
from limits import FAKE_COMPLETION_TOKENS, mixed_prompts

from llmgather.fake.common import count_tokens

sys.path.insert(0, str(HERE.parent / "tests"))
from redis_server import RedisServer  # the tests' own: a real redis-server on a free port

MODEL = "openai/fake"
ATTEMPT_TIMEOUT_S = 30.0
RETRIES = 5  # llmgather's default --max-retries; the Router gets as many
SHARED_TOLD, SHARED_LEARNING = "llmgather --shared, told", "llmgather --shared, learning"
ROUTER = "LiteLLM Router, usage-based-routing-v2 on Redis"
ALONE = "llmgather without --shared, each told the full limit"
ROWS = (SHARED_TOLD, SHARED_LEARNING, ROUTER, ALONE)
TARGETS = {SHARED_TOLD: (1.05, 0.01), SHARED_LEARNING: (1.10, 0.03)}
OVERHEAD_REQUESTS = 2000
NO_LIMIT = ("--rpm", "1000000", "--tpm", "1000000000")  # told alike with and without --shared, never reached


@dataclass
class Scenario:
    prompts: list[str]
    rpm: int
    tpm: int
    latency: float
    concurrency: int  # per process
    processes: int = 4

    def server_args(self) -> tuple[str, ...]:
        return ("--rpm", str(self.rpm), "--tpm", str(self.tpm), "--latency", str(self.latency))

    def told(self) -> tuple[str, ...]:
        return ("--rpm", str(self.rpm), "--tpm", str(self.tpm))

    def bound_s(self) -> float:
        tokens = sum(count_tokens(p) + FAKE_COMPLETION_TOKENS for p in self.prompts)
        return max(len(self.prompts) / (self.rpm / 60), tokens / (self.tpm / 60)) + self.latency

    def timeout_s(self) -> float:
        return 4 * self.bound_s() + 90

    def describe(self) -> str:
        return (
            f"{self.processes} processes x {len(self.prompts) // self.processes:,} prompts (40-1,000 chars), "
            f"{self.rpm:,} rpm + {self.tpm:,} tpm, {self.latency:g} s latency, concurrency {self.concurrency} "
            f"each; bound {self.bound_s():.2f} s"
        )


@dataclass
class Group:
    """What a group of processes got done, and what the provider and Redis saw of it."""

    ok: int
    wall_s: float
    cpu_s: float
    server: dict[str, object]
    span_s: float
    redis_commands: int
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return int(str(self.server["requests"]))

    @property
    def refused(self) -> int:
        return int(str(self.server["rate_limited"]))


@dataclass
class Launched:
    wall_s: float
    cpu_s: float
    finished: list[subprocess.CompletedProcess[str]]
    killed: int


# --- one LiteLLM Router process (this file run as `shared.py router-worker ...`) ---


def router_worker(url: str, redis_port: int, prompts_path: str, rpm: int, tpm: int, concurrency: int) -> None:
    """The usual recipe over a Router whose one deployment carries the limits and counts its usage in Redis."""
    import litellm

    litellm.suppress_debug_info = True
    deployment = {
        "model_name": "fake",
        "litellm_params": {"model": MODEL, "api_base": url, "api_key": "k", "rpm": rpm, "tpm": tpm},
        "model_info": {"id": "bench-fake"},  # the same in every process: they count under the same Redis keys
    }
    router = litellm.Router(
        model_list=[deployment],
        redis_host="127.0.0.1",
        redis_port=redis_port,
        routing_strategy="usage-based-routing-v2",
        enable_pre_call_checks=True,
        num_retries=RETRIES,
        timeout=ATTEMPT_TIMEOUT_S,
    )
    with open(prompts_path) as lines:
        prompts = [json.loads(line)["prompt"] for line in lines]

    def call(prompt: str) -> Awaitable[object]:
        return router.acompletion(model="fake", messages=[{"role": "user", "content": prompt}])  # type: ignore[no-any-return]

    ok, failed = asyncio.run(under_semaphore(call, prompts, concurrency))
    print(json.dumps({"ok": ok, "failed": failed}))


# --- groups of processes ---


def launch(commands: Sequence[Sequence[str]], timeout_s: float, workdir: Path) -> Launched:
    """Start every command together; wait for all, killing (by its pid) any still running at the timeout.

    Their output goes to files: a pipe left unread while another process is waited for could fill and stall it.
    """
    cpu_before, started = children_cpu(), time.perf_counter()
    processes = []
    for i, command in enumerate(commands):
        with open(workdir / f"stdout-{i}", "w") as out, open(workdir / f"stderr-{i}", "w") as err:
            processes.append(subprocess.Popen(list(command), stdout=out, stderr=err, text=True, env=BENCH_ENV))
    give_up, killed = started + timeout_s, 0
    for process in processes:
        try:
            process.wait(timeout=max(0.1, give_up - time.perf_counter()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            killed += 1
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu_before
    finished = [
        subprocess.CompletedProcess(
            p.args, p.returncode, (workdir / f"stdout-{i}").read_text(), (workdir / f"stderr-{i}").read_text()
        )
        for i, p in enumerate(processes)
    ]
    return Launched(wall, cpu, finished, killed)


Count = Callable[[list[subprocess.CompletedProcess[str]]], int]
"""How many prompts a finished group answered."""
Plan = Callable[[str], tuple[list[list[str]], Count]]
"""The group's commands against a provider URL, and how to count what they answered."""


def measure(scenario: Scenario, workdir: Path, redis: RedisServer, plan: Plan) -> Group:
    """One row: a fresh provider, an empty Redis, the group's processes; what each side saw."""
    log = workdir / "provider.log"
    log.unlink(missing_ok=True)
    server, url = start_server([*scenario.server_args(), "--log", str(log)])
    try:
        flush(redis)
        before = redis_commands(redis)
        commands, count = plan(url)
        launched = launch(commands, scenario.timeout_s(), workdir)
        sent = redis_commands(redis) - before
        notes = [f"exit {p.returncode}: {p.stderr.strip()[-300:]}" for p in launched.finished if p.returncode]
        if launched.killed:
            notes.append(f"{launched.killed} killed at the {scenario.timeout_s():.0f} s timeout")
        times = [float(json.loads(line)["t"]) for line in log.read_text().splitlines()]
        span = max(times) - min(times) + scenario.latency if times else 0.0
        return Group(count(launched.finished), launched.wall_s, launched.cpu_s, fake_stats(url), span, sent, notes)
    finally:
        server.terminate()
        server.wait()


def llmgather_plan(scenario: Scenario, parts: list[Path], extra: Sequence[str]) -> Plan:
    outs = [part.with_suffix(".out.jsonl") for part in parts]

    def plan(url: str) -> tuple[list[list[str]], Count]:
        for out in outs:
            out.unlink(missing_ok=True)
        commands = [llmgather_command(url, p, o, scenario.concurrency, extra) for p, o in zip(parts, outs, strict=True)]
        return commands, lambda _: sum(answered(out) for out in outs)

    return plan


def router_plan(scenario: Scenario, parts: list[Path], redis: RedisServer) -> Plan:
    limits = [str(redis.port), str(scenario.rpm), str(scenario.tpm), str(scenario.concurrency)]

    def plan(url: str) -> tuple[list[list[str]], Count]:
        commands = [
            [sys.executable, str(Path(__file__).resolve()), "router-worker", url, str(p), *limits] for p in parts
        ]
        return commands, lambda finished: sum(reported_ok(p.stdout) for p in finished)

    return plan


def llmgather_command(url: str, prompts: Path, out: Path, concurrency: int, extra: Sequence[str]) -> list[str]:
    return [
        *(sys.executable, "-m", "llmgather", "run", str(prompts), "-o", str(out), "--overwrite", "--quiet"),
        *("-m", MODEL, "--api-base", url, "--api-key-env", "OPENAI_API_KEY"),
        *("--concurrency", str(concurrency), "--timeout", str(ATTEMPT_TIMEOUT_S), *extra),
    ]


def answered(out: Path) -> int:
    if not out.exists():
        return 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return sum(row["error"] is None and bool(row.get("content")) for row in rows)


def reported_ok(stdout: str) -> int:
    lines = stdout.strip().splitlines()
    return int(json.loads(lines[-1])["ok"]) if lines else 0


def redis_commands(redis: RedisServer) -> int:
    import redis as redis_py

    with redis_py.Redis(port=redis.port) as client:
        return int(client.info("stats")["total_commands_processed"])


def flush(redis: RedisServer) -> None:
    import redis as redis_py

    with redis_py.Redis(port=redis.port) as client:
        client.flushall()


def fake_stats(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/_fake/stats") as response:
        return dict(json.load(response))


def split(prompts: list[str], processes: int, workdir: Path) -> list[Path]:
    return [write_prompts(workdir / f"part-{i}.jsonl", prompts[i::processes]) for i in range(processes)]


# --- the rows ---


def run_rows(scenario: Scenario, names: Sequence[str], workdir: Path, redis: RedisServer) -> dict[str, Group]:
    parts = split(scenario.prompts, scenario.processes, workdir)
    plans = {
        SHARED_TOLD: lambda: llmgather_plan(scenario, parts, ["--shared", redis.url, *scenario.told()]),
        SHARED_LEARNING: lambda: llmgather_plan(scenario, parts, ["--shared", redis.url]),
        ROUTER: lambda: router_plan(scenario, parts, redis),
        ALONE: lambda: llmgather_plan(scenario, parts, scenario.told()),
    }
    results = {}
    for name in names:
        results[name] = group = measure(scenario, workdir, redis, plans[name]())
        print(f"{name} | {describe(group)}", file=sys.stderr, flush=True)
    return results


def describe(g: Group) -> str:
    return (
        f"ok {g.ok} wall {g.wall_s:.2f} s at provider {g.span_s:.2f} s cpu {g.cpu_s:.1f} s "
        f"redis commands {g.redis_commands} server {g.server} {' '.join(g.notes)}"
    )


HEADER = (
    "four processes",
    "answered",
    "requests sent",
    "429s",
    "refused",
    "wall s",
    "wall / bound",
    "at provider / bound",
    "wall vs --shared told",
    "CPU s",
    "Redis commands / prompt",
    "target",
)


def row(scenario: Scenario, name: str, g: Group, reference: Group | None) -> tuple[str, ...]:
    share = g.refused / g.requests if g.requests else 0.0
    over, n = g.wall_s / scenario.bound_s(), len(scenario.prompts)
    target = "-"
    if name in TARGETS:
        wall_target, share_target = TARGETS[name]
        met = g.ok == n and over <= wall_target and share <= share_target
        target = f"{'met' if met else 'MISSED'} (≤{wall_target:.2f}, ≤{share_target:.0%})"
    return (
        name,
        f"{g.ok}/{n}",
        str(g.requests),
        str(g.refused),
        f"{share:.1%}",
        f"{g.wall_s:.2f}",
        f"{over:.3f}",
        f"{g.span_s / scenario.bound_s():.3f}",
        ratio(g.wall_s, reference.wall_s) if reference else "-",
        f"{g.cpu_s:.1f}",
        f"{g.redis_commands / n:.1f}",
        target,
    )


# --- the admission's own cost ---


@dataclass
class Cost:
    cpu_ms: float
    wall_ms: float


def admission_cost(workdir: Path, redis: RedisServer, shared: bool, requests: int) -> Cost:
    """Per request, one at a time at zero latency: a one-request run's cost (start-up, imports) taken out."""
    extra = ["--shared", redis.url, *NO_LIMIT] if shared else list(NO_LIMIT)
    scenario = Scenario([f"cost prompt {i}" for i in range(requests)], 10**6, 10**9, 0.0, 1, processes=1)
    costs = []
    for prompts in (scenario.prompts[:1], scenario.prompts):
        one = Scenario(prompts, scenario.rpm, scenario.tpm, 0.0, 1, processes=1)
        group = measure(one, workdir, redis, llmgather_plan(one, split(prompts, 1, workdir), extra))
        if group.ok != len(prompts):
            raise RuntimeError(f"the admission-cost run answered {group.ok}/{len(prompts)}: {group.notes}")
        costs.append(group)
    small, big = costs
    return Cost(
        1000 * (big.cpu_s - small.cpu_s) / (requests - 1),
        1000 * (big.wall_s - small.wall_s) / (requests - 1),
    )


COST_HEADER = ("one process, one request at a time, zero latency", "CPU ms / request", "wall ms / request")


def cost_rows(local: Cost, shared: Cost) -> list[tuple[str, ...]]:
    return [
        ("llmgather", f"{local.cpu_ms:.2f}", f"{local.wall_ms:.2f}"),
        ("llmgather --shared", f"{shared.cpu_ms:.2f}", f"{shared.wall_ms:.2f}"),
        ("--shared / local", ratio(shared.cpu_ms, local.cpu_ms), ratio(shared.wall_ms, local.wall_ms)),
        (
            "added by the Redis round trip",
            f"{shared.cpu_ms - local.cpu_ms:+.2f}",
            f"{shared.wall_ms - local.wall_ms:+.2f}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(str(i) for i in range(len(ROWS))), help="which rows, by index")
    parser.add_argument("--prompts-each", type=int, default=750)
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--tpm", type=int, default=720_000, help="default: binds, a fifth over the rpm bound")
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=50, help="per process")
    parser.add_argument("--cost-requests", type=int, default=OVERHEAD_REQUESTS, help="0 skips the admission cost")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    args = parser.parse_args()
    scenario = Scenario(mixed_prompts(4 * args.prompts_each), args.rpm, args.tpm, args.latency, args.concurrency)
    names = [ROWS[int(i)] for i in args.rows.split(",") if i]
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp)).start()
        try:
            results = run_rows(scenario, names, Path(tmp), redis)
            wanted = (False, True) if args.cost_requests > 1 else ()
            costs = [admission_cost(Path(tmp), redis, shared, args.cost_requests) for shared in wanted]
        finally:
            redis.stop()
    print(scenario.describe())
    reference = results.get(SHARED_TOLD)
    print_table(HEADER, [row(scenario, n, g, reference) for n, g in results.items()], markdown=args.markdown)
    if costs:
        print()
        print_table(COST_HEADER, cost_rows(*costs), markdown=args.markdown)


if __name__ == "__main__":
    if sys.argv[1:2] == ["router-worker"]:
        url, path, port, rpm, tpm, concurrency = sys.argv[2:8]
        router_worker(url, int(port), path, int(rpm), int(tpm), int(concurrency))
    else:
        main()
