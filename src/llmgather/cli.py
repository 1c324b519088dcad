"""The command line, and nothing else: flags in, one run, one clear line per error, the exit code.

Exit codes: 0 all succeeded; 1 some requests failed; 2 bad input or usage, nothing sent;
3 the run was stopped (auth, quota, budget) and can be resumed; 130 interrupted (Ctrl-C, SIGTERM).
Heavy modules (aiohttp, rich, the engine) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from llmgather.cache import ResponseCache
    from llmgather.cache_redis import RedisCache
    from llmgather.config import ModelConfig, RunConfig
    from llmgather.io import OutputFile, ResumeState
    from llmgather.io.rows import Template
    from llmgather.limits.shared_redis import QuotaView
    from llmgather.pricing import Prices
    from llmgather.runner import Outcome
    from llmgather.types import Request

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_STOPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmgather")
def main() -> None:
    """Run thousands of LLM requests at once, at the provider's rate limit, with no result lost."""


@main.command("run")
@click.argument("input_path", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="Results file (JSONL), locked while the run lasts. Default, or '-': standard output.",
)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="provider/name as LiteLLM spells it (openai/gpt-5-mini). Repeat to send every request to each.",
)
@click.option(
    "--models",
    "models_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of [[model]] tables, each with its own api_base, api_key_env, limits and price.",
)
@click.option(
    "--fallback",
    "fallbacks",
    multiple=True,
    metavar="MODEL",
    help="When a request fails for good (after its retries), send it to this model (repeatable, in order).",
)
@click.option(
    "--api-base",
    help="OpenAI-compatible endpoint (vLLM, Ollama, ...), an http(s):// URL; its models go the native way.",
)
@click.option(
    "--api-key-env",
    help="Environment variable holding the API key. Default: OPENAI_API_KEY for OpenAI's own endpoint only "
    "(another --api-base gets no key unless this names one); LiteLLM's own for other providers.",
)
@click.option(
    "--concurrency",
    type=int,
    default=50,
    show_default=True,
    help="Requests in flight at once, per model.",
)
@click.option("--rpm", type=float, help="Requests per minute, per model.")
@click.option("--tpm", type=float, help="Tokens per minute, input and output together (OpenAI's count), per model.")
@click.option("--input-tpm", type=float, help="Input tokens per minute, per model (Anthropic's ITPM).")
@click.option("--output-tpm", type=float, help="Output tokens per minute, per model (Anthropic's OTPM).")
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds for one attempt.",
)
@click.option(
    "--max-retries",
    type=int,
    default=5,
    show_default=True,
    help="Retries of a transient failure (429, 5xx, timeout, dropped connection).",
)
@click.option(
    "--deadline",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds for all attempts at one request together.",
)
@click.option(
    "--template",
    help='Build each prompt from the input row\'s columns: "Answer briefly: {question}". For CSV, Parquet or JSONL.',
)
@click.option(
    "--template-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Jinja2 template file for each prompt, filled from the row's columns (needs llmgather[templates]).",
)
@click.option("--system", help="A system message sent before each templated prompt.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option(
    "--resume", is_flag=True, help="Continue an earlier run into the same -o: send only what it left unanswered."
)
@click.option("--retry-failed", is_flag=True, help="With --resume, also send again what ended in error.")
@click.option(
    "--cache",
    "cache_path",
    metavar="PATH|redis://HOST:PORT/DB",
    help="Response cache: an answer found there for the same request costs no request. An SQLite file that runs"
    " on this machine may share, or a Redis that runs on several hosts share.",
)
@click.option(
    "--cache-deterministic-only",
    is_flag=True,
    help="Cache only requests at temperature 0 (by default every request is cached, as it was sent).",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds that requests in flight get to finish after Ctrl-C or SIGTERM.",
)
@click.option(
    "--max-cost",
    type=float,
    help="Stop (resumably) before the spend would pass this many USD (in-flight requests count as estimated).",
)
@click.option("--max-requests", type=int, help="Stop (resumably) after sending this many requests.")
@click.option(
    "--price",
    "prices",
    multiple=True,
    metavar="MODEL=IN,OUT[,CACHE_READ[,CACHE_WRITE]]",
    help="USD per million input, output and (optionally) cache-read and cache-write tokens for MODEL (repeatable);"
    " a cache rate left out is the input rate (Anthropic's: 0.1x and 1.25x it); wins over the price tables.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the requests, estimated tokens and cost per model, and send nothing.",
)
@click.option(
    "--batch",
    is_flag=True,
    help="Send through the provider's batch API (half the price; answers within hours). A journal of the batches"
    " is kept beside the output, so a crash or Ctrl-C leaves them running and --resume collects them.",
)
@click.option(
    "--by",
    "batch_by",
    metavar="DURATION",
    help="With --batch: what the batches have not answered by then (90s, 10m, 2h, 1h30m from the start) is"
    " cancelled and sent online.",
)
@click.option("--batch-size", type=int, help="With --batch: at most this many requests per batch.")
@click.option("--detach", is_flag=True, help="With --batch: submit the batches and exit; --resume collects them.")
@click.option(
    "--shared",
    metavar="redis://HOST:PORT/DB",
    help="Pace together with every other process given the same Redis: one provider limit for all of them (each"
    " model's requests, tokens, cool-downs and learned limits are kept there). A run whose Redis does not answer"
    " is refused; one that loses it mid-run paces alone at its share until it is back.",
)
@click.option(
    "--shared-optional",
    is_flag=True,
    help="With --shared: if Redis does not answer at the start, pace alone until it does instead of refusing.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress view and no summary.")
def run_command(**options: Any) -> None:
    """Send every request in INPUT (JSONL, CSV or Parquet; '-' reads JSONL from standard input).

    \b
    Each input line is one of:
      {"id": ..., "prompt": "..."}
      {"id": ..., "messages": [...]}
      {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}
    Other keys (temperature, max_tokens, ...) pass through to the request.
    CSV and Parquet files are read as rows: a 'prompt' column, or --template
    filled from the columns; the other columns come back in each result's "row".
    The whole input is checked before anything is sent.
    """
    closed = _occupy_closed_streams()
    signal.signal(signal.SIGTERM, _interrupted)  # before the run's own handlers: checking a big input takes a while
    _exit_at_once(_at_the_boundary(lambda: _run(RunOptions(**options), stdout_closed=1 in closed)))


@dataclass(frozen=True, slots=True)
class RunOptions:
    input_path: str
    output: Path | None
    models: tuple[str, ...]
    models_file: Path | None
    fallbacks: tuple[str, ...]
    api_base: str | None
    api_key_env: str | None
    concurrency: int
    rpm: float | None
    tpm: float | None
    input_tpm: float | None
    output_tpm: float | None
    timeout: float
    max_retries: int
    deadline: float
    template: str | None
    template_file: Path | None
    system: str | None
    overwrite: bool
    resume: bool
    retry_failed: bool
    cache_path: str | None
    cache_deterministic_only: bool
    grace: float
    max_cost: float | None
    max_requests: int | None
    prices: tuple[str, ...]
    dry_run: bool
    batch: bool
    batch_by: str | None
    batch_size: int | None
    detach: bool
    shared: str | None
    shared_optional: bool
    quiet: bool


def _occupy_closed_streams() -> frozenset[int]:
    """Point a standard stream the caller closed (`>&-`) at /dev/null, so that no file of the run takes its
    number (uvloop aborts on closing fds 0-2) and writing to it cannot fail; return which were closed.
    `sys.stdin` stays None, so that reading a closed standard input is told as such."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 1 in closed:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the process's lifetime)
    if 2 in closed:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    return frozenset(closed)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _exit_at_once(code: int) -> NoReturn:
    """Leave without tearing the interpreter down: every result is written and its file closed by now, and
    unloading aiohttp, ssl and rich would add a tenth of a second to every run."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (BrokenPipeError, ValueError):
            pass  # the reader has gone, or the stream was closed: there is no one left to tell
    os._exit(code)


def _at_the_boundary(command: Callable[[], int]) -> int:
    """The one error boundary: whatever a command raises becomes one line and the exit code from the README.

    Our own errors say what to do; an OSError names its file; anything else is a bug of ours, said in one
    line too (LLMGATHER_DEBUG=1 shows the traceback).
    """
    from llmgather.errors import Error, InputError, RunStopped

    try:
        return command()
    except KeyboardInterrupt:
        click.echo("llmgather: interrupted; results written so far are kept.", err=True)
        return EXIT_INTERRUPTED
    except Error as error:
        click.echo(f"llmgather: error: {error}", err=True)
        if isinstance(error, RunStopped):
            return EXIT_STOPPED
        return EXIT_USAGE if isinstance(error, InputError) else EXIT_FAILURES
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        click.echo(f"llmgather: error: {where}{error.strerror or error}", err=True)
        return EXIT_USAGE
    except Exception as error:
        if os.environ.get("LLMGATHER_DEBUG"):
            raise
        click.echo(
            f"llmgather: internal error: {type(error).__name__}: {error} (a bug: please report it;"
            " LLMGATHER_DEBUG=1 shows where)",
            err=True,
        )
        return EXIT_FAILURES


def _run(options: RunOptions, *, stdout_closed: bool = False) -> int:
    from llmgather import eventloop
    from llmgather.errors import InputError
    from llmgather.io import OutputFile, open_input
    from llmgather.runner import opened_cache, reach_shared, refuse_changed_input, refuse_live_batches

    config = _run_config(options)
    if config.output is None and stdout_closed and not options.dry_run:
        raise InputError("standard output is closed, so the results would be lost: give them a file with -o")
    with open_input(options.input_path, template=_template(options)) as source:
        total = source.check()
        if options.dry_run:
            _dry_run(source, config)
            return EXIT_OK
        config.check_keys()  # after the dry run: estimating needs no key
        refuse_live_batches(config)
        eventloop.run(reach_shared(config))
        guard = {"input": source.path or _stdin_file(options.input_path), "cache": config.cache}
        with (
            opened_cache(config, on_warning=lambda message: _tell(f"warning: {message}")) as cache,
            OutputFile.open(
                config.output,
                resume=config.resume,
                retry_failed=config.retry_failed,
                overwrite=config.overwrite,
                guard=guard,
                check=lambda earlier: refuse_changed_input(source, config, earlier),
            ) as output,
        ):
            if config.resume and not options.quiet:
                click.echo(_resume_line(output.state), err=True)
            totals = {c.model: max(0, total - output.state.done_for(c.model)) for c in config.models}
            outcome = eventloop.run(_drive(config, source, output, cache, totals, options.quiet))
    return _finish(options, config, outcome, cache)


async def _drive(
    config: RunConfig,
    source: Iterable[Request],
    output: OutputFile,
    cache: ResponseCache | RedisCache | None,
    totals: dict[str, int],
    quiet: bool,
) -> Outcome:
    """The run on the event loop: the one run path, with this terminal's progress view and signals."""
    from llmgather.progress import Progress
    from llmgather.runner import Run, Signals

    mode = "quiet" if quiet else ("live" if sys.stderr.isatty() else "plain")
    async with (
        Run(config, cache=cache, on_warning=lambda m: _tell(f"warning: {m}")) as run,
        Progress(run.stats, totals, mode=mode, stream=sys.stderr),
    ):
        with Signals(run, config.grace_s, _tell):
            return await run.drive(source, output.write, output.state)


def _stdin_file(input_path: str) -> Path | None:
    """The file standard input was redirected from (`< out.jsonl`), so that the output cannot be it."""
    if input_path != "-":
        return None
    stdin = Path("/dev/stdin")
    return stdin.resolve() if stdin.exists() and stdin.resolve().is_file() else None


def _tell(message: str) -> None:
    click.echo(f"llmgather: {message}", err=True)


def _run_config(options: RunOptions) -> RunConfig:
    """The run the flags describe: -m models with the flags' settings, --models tables with their own."""
    from llmgather.config import ModelConfig, RunConfig, configs_from_tables, read_model_tables
    from llmgather.pricing import parse_price

    flags: dict[str, Any] = {
        "api_base": options.api_base,
        "api_key_env": options.api_key_env,
        "concurrency": options.concurrency,
        "rpm": options.rpm,
        "tpm": options.tpm,
        "input_tpm": options.input_tpm,
        "output_tpm": options.output_tpm,
        "timeout": options.timeout,
        "max_retries": options.max_retries,
        "deadline": options.deadline,
        "prices": dict(parse_price(text) for text in options.prices),
        "shared": options.shared,
    }
    path = options.models_file
    tables = configs_from_tables(path, read_model_tables(path), flags) if path is not None else []
    by_name = {c.model: c for c in tables}
    models = [ModelConfig.build(model, **flags) for model in options.models] + tables
    fallbacks = [by_name.get(model) or ModelConfig.build(model, **flags) for model in options.fallbacks]
    output = None if options.output is None or str(options.output) == "-" else options.output
    return RunConfig.build(
        models,
        fallbacks=fallbacks,
        output=output,
        resume=options.resume,
        retry_failed=options.retry_failed,
        overwrite=options.overwrite,
        cache=options.cache_path,
        cache_deterministic_only=options.cache_deterministic_only,
        max_cost=options.max_cost,
        max_requests=options.max_requests,
        grace=options.grace,
        batch=options.batch,
        by=options.batch_by,
        batch_size=options.batch_size,
        detach=options.detach,
        shared_optional=options.shared_optional,
    )


def _template(options: RunOptions) -> Template | None:
    from llmgather.errors import InputError
    from llmgather.io.rows import Template

    if options.template and options.template_file:
        raise InputError("give --template or --template-file, not both")
    if options.template_file is not None:
        return Template.from_file(options.template_file, system=options.system)
    if options.template:
        return Template(options.template, system=options.system)
    if options.system:
        raise InputError("--system goes with --template or --template-file")
    return None


def _dry_run(source: Iterable[Request], config: RunConfig) -> None:
    from llmgather.io.resume import prepare_resume
    from llmgather.limits.tokens import TokenEstimator
    from llmgather.report import Estimate, dry_run_lines

    done = None
    if config.resume and config.output is not None:
        done = prepare_resume(config.output, retry_failed=config.retry_failed, repair=False)
    estimator = TokenEstimator()
    from llmgather.pricing import batch_prices

    def prices(c: ModelConfig) -> Prices | None:
        return batch_prices(c.model, c.price()) if config.batch is not None else c.price()

    estimates = [Estimate(c.model, prices=prices(c)) for c in config.models]
    for request in source:
        prompt_tokens = estimator.prompt_tokens(request)
        completion_tokens = estimator.expected_completion(request)  # the default guess: nothing is observed
        unbudgeted = request.completion_budget() is None
        for estimate in estimates:
            if done is not None and done.skips(request.id, estimate.model):
                continue
            estimate.requests += 1
            estimate.prompt_tokens += prompt_tokens
            estimate.completion_tokens += completion_tokens
            estimate.unbudgeted += unbudgeted
    for line in dry_run_lines(estimates):
        click.echo(line)


def _resume_line(resume: ResumeState) -> str:
    torn = f"; cut off a torn last line ({resume.torn_bytes} bytes)" if resume.torn_bytes else ""
    retried = f"; sending {resume.failed_to_retry} failed ones again" if resume.failed_to_retry else ""
    kept = f", {resume.failed_kept} failed (kept; --retry-failed sends them again)" if resume.failed_kept else ""
    return f"llmgather: resuming: {resume.succeeded} already answered{kept}{retried}{torn}"


def _finish(options: RunOptions, config: RunConfig, outcome: Outcome, cache: ResponseCache | RedisCache | None) -> int:
    if not options.quiet:
        from llmgather.report import summary_lines  # 10 ms of imports a quiet run has no use for

        for line in summary_lines(outcome.stats, outcome.wall_s):
            click.echo(line, err=True)
        if cache is not None:
            click.echo(_cache_line(cache), err=True)
    for stop in outcome.stopped:
        click.echo(f"llmgather: stopped: {stop}", err=True)
    if outcome.live_batches or outcome.unconfirmed_batches:
        # Paid for: they are never cancelled on the way out (`llmgather batches OUT --cancel` does).
        live = [f"{outcome.live_batches} batches are live at the provider"] if outcome.live_batches else []
        if outcome.unconfirmed_batches:
            live.append(
                f"{outcome.unconfirmed_batches} submissions were cut short (the resume asks the provider for their"
                " batches before sending them again)"
            )
        click.echo(
            f"llmgather: {'; '.join(live)}; {outcome.written} results written this run. To collect the rest, run:"
            f"\n  {resume_command(sys.argv[1:])}",
            err=True,
        )
        if not (outcome.interrupted or outcome.stopped):
            return EXIT_OK  # --detach: submitted, as asked
        return EXIT_INTERRUPTED if outcome.interrupted else EXIT_STOPPED
    if outcome.interrupted or outcome.stopped:
        where = f" to {config.output}" if config.output is not None else ""
        cut = f"; {outcome.cut_off} in flight were cut off" if outcome.cut_off else ""
        click.echo(
            f"llmgather: {outcome.written} results written this run{where}{cut}; the rest were not sent.", err=True
        )
        if config.output is not None:
            click.echo(f"llmgather: to finish, run:\n  {resume_command(sys.argv[1:])}", err=True)
        return EXIT_INTERRUPTED if outcome.interrupted else EXIT_STOPPED
    return EXIT_FAILURES if outcome.failed else EXIT_OK


def _cache_line(cache: ResponseCache | RedisCache) -> str:
    line = f"cache        {cache.hits} answers from the cache, {cache.stored} stored"
    if cache.skipped:
        line += f", {cache.skipped} not cached (above temperature 0, and --cache-deterministic-only)"
    if cache.disabled:
        line += f"; switched off during the run: {cache.disabled}"
    return line


def resume_command(argv: list[str]) -> str:
    """The command that finishes this run: the same one, with --resume instead of --overwrite."""
    from llmgather.limits.shared_redis import redacted

    args = [redacted(arg) if "://" in arg else arg for arg in argv if arg not in ("--overwrite", "--detach")]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["llmgather", *args])


@main.command(
    "fake-server",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def fake_server_command(args: tuple[str, ...]) -> None:
    """Start the fake OpenAI-compatible provider (latency, limits, faults). See --help."""
    from llmgather.fake.main import main as fake_main

    fake_main(list(args))


@main.group("cache")
def cache_group() -> None:
    """Look into or empty a response cache (the file or Redis URL given to `run --cache`)."""


@cache_group.command("stats")
@click.argument("where", metavar="PATH|redis://HOST:PORT/DB")
def cache_stats(where: str) -> None:
    """How many answers the cache holds, per model, and their size."""
    from llmgather.cache import describe

    def stats() -> int:
        with _existing_cache(where) as cache:
            for line in describe(cache.stats()):
                click.echo(line)
        return EXIT_OK

    _exit_at_once(_at_the_boundary(stats))


@cache_group.command("clear")
@click.argument("where", metavar="PATH|redis://HOST:PORT/DB")
@click.option("-m", "--model", help="Remove only this model's answers.")
def cache_clear(where: str, model: str | None) -> None:
    """Remove the answers the cache holds (all, or one model's)."""

    def clear() -> int:
        with _existing_cache(where) as cache:
            removed = cache.clear(model)
        click.echo(f"removed {removed} answers from {cache.where}")
        return EXIT_OK

    _exit_at_once(_at_the_boundary(clear))


def _existing_cache(where: str) -> ResponseCache | RedisCache:
    """The cache at `where`, which must exist: looking into a cache never makes one."""
    from llmgather.cache import open_cache
    from llmgather.config import is_redis_url
    from llmgather.errors import InputError

    if not is_redis_url(where) and not Path(where).is_file():
        raise InputError("no such cache file", source=where)
    return open_cache(where)


@main.command("batches")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cancel", is_flag=True, help="Cancel every batch of the run still live (what they answered is kept).")
@click.option("--api-key-env", help="The environment variable holding the key, when not the provider's own.")
def batches_command(output: Path, cancel: bool, api_key_env: str | None) -> None:
    """List the batches of the `run --batch` whose output is OUTPUT, with their state at the provider.

    With --cancel, ask the provider to cancel those still running, and note them in the journal as given up. A
    cancelled batch keeps what it answered: `run ... --batch --resume` collects that and sends the rest again;
    `run ... --overwrite` starts over without them."""
    from llmgather import eventloop
    from llmgather.batch.manage import list_batches, listing_lines, read_journal

    def show() -> int:
        journal = read_journal(output, for_writing=cancel)
        try:
            listed = eventloop.run(list_batches(journal, api_key_env=api_key_env, cancel=cancel))
        finally:
            journal.close()
        for line in listing_lines(listed):
            click.echo(line)
        return EXIT_FAILURES if any(entry.problem and entry.status is None for entry in listed) else EXIT_OK

    _exit_at_once(_at_the_boundary(show))


@main.group("shared")
def shared_group() -> None:
    """The paces that runs given --shared keep in Redis."""


@shared_group.command("status")
@click.argument("url", metavar="redis://HOST:PORT/DB")
def shared_status(url: str) -> None:
    """Print the live state of every limit kept at URL: its limits, its pace, who shares it, what is booked."""
    from llmgather import eventloop
    from llmgather.config import check_shared
    from llmgather.errors import InputError
    from llmgather.limits.shared_redis import RedisStore
    from llmgather.limits.shared_state import Unreachable

    async def read() -> list[str]:
        store = RedisStore.connect(url)
        try:
            return _status_lines(await store.quotas(), store.where)
        except Unreachable as exc:
            raise InputError(f"the shared pace does not answer ({exc})") from None
        finally:
            await store.aclose()

    def show() -> int:
        check_shared(url)
        for line in eventloop.run(read()):
            click.echo(line)
        return EXIT_OK

    _exit_at_once(_at_the_boundary(show))


def _status_lines(views: list[QuotaView], where: str) -> list[str]:
    """`llmgather shared status`: one block per quota."""
    from llmgather.limits.pace import HEADROOM

    if not views:
        return [f"no shared limits at {where}"]
    lines = [f"{len(views)} shared limit{'s' if len(views) != 1 else ''} at {where}"]
    for view in views:
        lines.append(f"{view.model} at {view.endpoint or '(endpoint unknown)'}")
        limits = [
            f"{ceiling:,.0f} {unit}"
            for ceiling, unit in zip(view.ceilings, ("rpm", "tpm", "input tpm", "output tpm"), strict=True)
            if ceiling > 0
        ]
        paces = [
            f"{pace * 60 / HEADROOM:,.0f} {unit}"
            for pace, unit in zip(view.paces, ("rpm", "tpm", "input tpm", "output tpm"), strict=True)
            if pace > 0
        ]
        lines.append(f"  limits     {', '.join(limits) or 'none known yet'}")
        lines.append(f"  pace       {', '.join(paces) or 'none yet'}")
        lines.append(f"  processes  {view.members} sharing it now, {view.granted:,} requests granted")
        booked = f"{view.queued_s:.1f}s booked ahead" if view.queued_s >= 0.05 else "nothing booked ahead"
        cooling = f", cooling {view.cooling_s:.1f}s after a 429" if view.cooling_s >= 0.05 else ""
        lines.append(f"  now        {booked}{cooling}")
    return lines


@main.command("compare")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "csv", "html"]),
    default="table",
    show_default=True,
)
@click.option("--expected", help="The row column holding the expected answer. Default: answer, expected, target, ...")
@click.option("--scorer", metavar="MODULE:FUNCTION", help="Mark each answer with FUNCTION(answer, row) -> 0..1.")
@click.option(
    "--answers",
    type=click.Choice(["all", "differ", "none"]),
    default="all",
    show_default=True,
    help="Which prompts' answers to show: all, those where the models differ (or one failed), or none.",
)
def compare_command(output: Path, fmt: str, expected: str | None, scorer: str | None, answers: str) -> None:
    """Compare the models in OUTPUT (a `run` output): per model, then each prompt's answers side by side.

    Per model: success rate, latency p50/p95/p99, tokens, cost and, when the rows carry an expected
    answer (from a CSV or Parquet input), exact-match accuracy. Answers count as the same when they
    match as exact-match scoring sees them (case, surrounding space and final punctuation aside).
    """
    from llmgather.report import compare, load_scorer, render

    def show() -> int:
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # so that --scorer finds the user's own modules
        loaded = load_scorer(scorer) if scorer else None
        comparison = compare(output, expected=expected, scorer=loaded, answers=answers != "none")
        click.echo(render(comparison, fmt, answers), nl=False)
        return EXIT_OK

    _exit_at_once(_at_the_boundary(show))


@main.command("report")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "page",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
def report_command(output: Path, page: Path) -> None:
    """Write one self-contained HTML page about OUTPUT (a `run` output): the per-model table, latency
    distributions, requests completed over time with 429s and retries marked, and cost per model."""
    from llmgather.report import build_report

    def write() -> int:
        from llmgather.errors import InputError

        if page.exists() and output.exists() and os.path.samefile(page, output):
            raise InputError(f"{page} is the output to report on: give the page another name with -o")
        page.write_text(build_report(output), encoding="utf-8")
        click.echo(f"wrote {page}")
        return EXIT_OK

    _exit_at_once(_at_the_boundary(write))
