"""Command line of the fake provider: serve until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Callable

from llmgather.fake.common import FakeConfig
from llmgather.fake.server import serve


def parse_args(argv: list[str] | None) -> tuple[FakeConfig, str, int]:
    parser = argparse.ArgumentParser(
        prog="llmgather fake-server",
        description="A fake provider speaking OpenAI's chat completions and Anthropic's messages, and both their "
        "batch APIs, with latency, rate limits and faults, for dry runs and tests. It prints 'listening on URL' once "
        "ready; point --api-base at that URL (for anthropic/ models, at the URL without /v1).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra latency drawn uniformly from 0 to this")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute, enforced per minute and per second")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute, enforced per minute and per second")
    parser.add_argument(
        "--input-tpm", type=int, default=None, help="input tokens per minute (cache reads not counted), as --tpm is"
    )
    parser.add_argument(
        "--output-tpm", type=int, default=None, help="output tokens per minute, reserved at max_tokens, as --tpm is"
    )
    parser.add_argument(
        "--window",
        choices=("sliding", "clock-minute"),
        default="sliding",
        help="sliding: a sliding minute and every second (default); clock-minute: per clock minute, as LiteLLM Proxy",
    )
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of answers that are 503s")
    parser.add_argument(
        "--overload-rate", type=float, default=0.0, help="share of answers that are 529 overloaded_error"
    )
    parser.add_argument("--drop-rate", type=float, default=0.0, help="share of connections dropped without an answer")
    parser.add_argument("--hang-rate", type=float, default=0.0, help="share of requests that never get an answer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws (default 0)")
    parser.add_argument(
        "--api-key", default=None, help="require this key (Bearer, or x-api-key on /v1/messages); others get 401"
    )
    parser.add_argument("--model", action="append", default=[], help="known model (repeatable); others get 404")
    parser.add_argument("--quota", type=int, default=None, help="after this many answers, 429 insufficient_quota")
    parser.add_argument(
        "--daily-quota", type=int, default=None, help="after this many answers, Gemini's per-day quota 429"
    )
    parser.add_argument(
        "--credit-after", type=int, default=None, help="after this many answers, Anthropic's credit-too-low 400"
    )
    parser.add_argument("--completion-tokens", type=int, default=16, help="tokens in each answer (default 16)")
    parser.add_argument(
        "--no-limit-headers", action="store_true", help="send no x-ratelimit-* headers (like many local servers)"
    )
    parser.add_argument(
        "--outage",
        default=None,
        metavar="START,SECONDS",
        help="an outage: from START seconds after the first request, for SECONDS, every request gets a 503",
    )
    parser.add_argument(
        "--max-context",
        type=int,
        default=None,
        help="prompts over this many tokens get a 400 context_length_exceeded",
    )
    parser.add_argument(
        "--log", default=None, help="append one JSON line per request, and per batch created, cancelled and ended"
    )
    parser.add_argument("--batch-seconds", type=float, default=2.0, help="time a batch takes (default 2)")
    parser.add_argument(
        "--batch-error-rate", type=float, default=0.0, help="share of batch requests answered with a transient error"
    )
    parser.add_argument(
        "--batch-expire-rate", type=float, default=0.0, help="share of batch requests that expire unanswered"
    )
    parser.add_argument(
        "--batch-max-requests", type=int, default=None, help="requests per batch (default: 50,000 / 100,000)"
    )
    parser.add_argument(
        "--batch-enqueued-tokens", type=int, default=None, help="OpenAI's enqueued-token limit for batches"
    )
    args = parser.parse_args(argv)
    outage = None
    if args.outage:
        try:
            start, seconds = (float(part) for part in args.outage.split(","))
        except ValueError:
            parser.error("--outage takes START,SECONDS, for example 0.5,3")
        outage = (start, seconds)
    config = FakeConfig(
        latency=args.latency,
        jitter=args.jitter,
        rpm=args.rpm,
        tpm=args.tpm,
        input_tpm=args.input_tpm,
        output_tpm=args.output_tpm,
        clock_minute=args.window == "clock-minute",
        fail_rate=args.fail_rate,
        overload_rate=args.overload_rate,
        drop_rate=args.drop_rate,
        hang_rate=args.hang_rate,
        seed=args.seed,
        api_key=args.api_key,
        models=tuple(args.model),
        quota=args.quota,
        daily_quota=args.daily_quota,
        credit_after=args.credit_after,
        completion_tokens=args.completion_tokens,
        log_path=args.log,
        limit_headers=not args.no_limit_headers,
        outage=outage,
        max_context=args.max_context,
        batch_seconds=args.batch_seconds,
        batch_error_rate=args.batch_error_rate,
        batch_expire_rate=args.batch_expire_rate,
        batch_max_requests=args.batch_max_requests,
        batch_enqueued_tokens=args.batch_enqueued_tokens,
    )
    return config, args.host, args.port


async def _serve_until_signalled(config: FakeConfig, host: str, port: int) -> None:
    runner, bound = await serve(config, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://{host}:{bound}/v1", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _fastest_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: the server then spends less of a shared machine's CPU than its clients do."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> None:
    config, host, port = parse_args(argv)
    # Its clock is the one limits are judged by: a full collection that stalls it stamps requests late,
    # bunched with the next ones, and a client exactly at the limit would be refused for the server's pause.
    gc.freeze()
    with asyncio.Runner(loop_factory=_fastest_loop()) as runner:
        runner.run(_serve_until_signalled(config, host, port))
    sys.exit(0)
