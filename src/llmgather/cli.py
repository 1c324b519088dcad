"""The command line, and nothing else: flags in, one run, one clear line per error, the exit code.

Exit codes: 0 all succeeded; 1 some requests failed; 2 bad input or usage, nothing sent;
3 the run was stopped (quota, auth) and can be resumed; 130 interrupted.
Heavy modules (aiohttp, rich, the engine) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

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
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results file (JSONL). Default: standard output.",
)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    required=True,
    help="provider/name as LiteLLM spells it (openai/gpt-5-mini). Repeat to send every request to each.",
)
@click.option("--api-base", help="OpenAI-compatible endpoint (vLLM, Ollama, ...); its models go the native way.")
@click.option(
    "--api-key-env",
    help="Environment variable holding the API key. Default: OPENAI_API_KEY for "
    "OpenAI-compatible endpoints; LiteLLM's own for other providers.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Requests in flight at once, per model.",
)
@click.option("--rpm", type=click.FloatRange(min=0, min_open=True), help="Requests per minute, per model.")
@click.option("--tpm", type=click.FloatRange(min=0, min_open=True), help="Tokens per minute, per model.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds for one attempt.",
)
@click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Retries of a transient failure (429, 5xx, timeout, dropped connection).",
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=600.0,
    show_default=True,
    help="Seconds for all attempts at one request together.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress view and no summary.")
def run_command(
    input_path: str,
    output: Path | None,
    models: tuple[str, ...],
    api_base: str | None,
    api_key_env: str | None,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
    timeout: float,
    max_retries: int,
    deadline: float,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Send every request in INPUT (JSONL; '-' for standard input) and write one result line each.

    \b
    Each input line is one of:
      {"id": ..., "prompt": "..."}
      {"id": ..., "messages": [...]}
      {"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}
    Other keys (temperature, max_tokens, ...) pass through to the request.
    The whole input is checked before anything is sent.
    """
    from llmgather.errors import Error

    try:
        code = _run(
            input_path,
            output,
            list(models),
            api_base,
            api_key_env,
            concurrency,
            rpm,
            tpm,
            timeout,
            max_retries,
            deadline,
            overwrite,
            quiet,
        )
    except KeyboardInterrupt:
        click.echo("llmgather: interrupted; results written so far are kept.", err=True)
        code = EXIT_INTERRUPTED
    except Error as error:
        code = _report_error(error)
    _exit_at_once(code)


def _exit_at_once(code: int) -> NoReturn:
    """Leave without tearing the interpreter down: every result is written and its file closed by now, and
    unloading aiohttp, ssl and rich would add a tenth of a second to every run."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass  # the reader has gone: there is no one left to tell
    os._exit(code)


def _report_error(error: Exception) -> int:
    from llmgather.errors import InputError, RunStopped

    click.echo(f"llmgather: error: {error}", err=True)
    if isinstance(error, RunStopped):
        return EXIT_STOPPED
    return EXIT_USAGE if isinstance(error, InputError) else EXIT_FAILURES


def _run(
    input_path: str,
    output: Path | None,
    models: list[str],
    api_base: str | None,
    api_key_env: str | None,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
    timeout: float,
    max_retries: int,
    deadline: float,
    overwrite: bool,
    quiet: bool,
) -> int:
    from llmgather import eventloop
    from llmgather.batch import run_batch
    from llmgather.client import ModelConfig
    from llmgather.errors import InputError
    from llmgather.io import ResultWriter, open_input
    from llmgather.report import summary_lines

    if output is not None and output.exists() and output.stat().st_size > 0 and not overwrite:
        raise InputError(f"{output} already exists: pass --overwrite to replace it, or choose another -o")
    source = open_input(input_path)
    total = source.check()
    configs = [
        ModelConfig.build(
            model,
            api_base=api_base,
            api_key_env=api_key_env,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            timeout=timeout,
            max_retries=max_retries,
            deadline=deadline,
        )
        for model in models
    ]
    mode = "quiet" if quiet else ("live" if sys.stderr.isatty() else "plain")
    writer = ResultWriter(output)
    try:
        outcome = eventloop.run(
            run_batch(
                [source for _ in configs],
                configs,
                writer,
                total=total,
                progress_mode=mode,
                progress_stream=sys.stderr,
            )
        )
    finally:
        writer.close()
        source.discard_spool()
    if not quiet:
        for line in summary_lines(outcome.stats, outcome.wall_s):
            click.echo(line, err=True)
    if outcome.stopped:
        for stop in outcome.stopped:
            click.echo(f"llmgather: stopped: {stop}", err=True)
        click.echo(f"llmgather: {writer.written} results written; the rest were not sent.", err=True)
        return EXIT_STOPPED
    return EXIT_FAILURES if outcome.failed else EXIT_OK


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
