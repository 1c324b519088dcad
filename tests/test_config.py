"""The one configuration boundary: every option checked once, the same way from flags, TOML and keywords."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, run_cli, write_jsonl

import llmgather
from llmgather.config import ModelConfig, RunConfig
from llmgather.errors import InputError


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"config {i}"} for i in range(3)])


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI; it must refuse with exit 2 and one line (no traceback). Returns that line."""
    done = run_cli("run", *args, env=env)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--rpm", "nan", "rpm"),
        ("--tpm", "inf", "tpm"),
        ("--rpm", "-5", "rpm"),
        ("--timeout", "nan", "timeout"),
        ("--deadline", "-1", "deadline"),
        ("--max-cost", "nan", "max_cost"),
        ("--grace", "inf", "grace"),
        ("--concurrency", "0", "concurrency"),
        ("--price", "openai/fake=nan,1", "price"),
    ],
)
def test_non_finite_or_negative_numbers_are_refused_before_anything_is_sent(
    prompts: Path, flag: str, value: str, named: str
) -> None:
    line = refused(str(prompts), "-m", "openai/fake", "--api-base", "http://127.0.0.1:9/v1", flag, value, "--dry-run")
    assert named in line


@pytest.mark.parametrize(
    "api_base",
    ["", "localhost:8000/v1", "ftp://example.com/v1", "http://", "http://[::1/v1", "http://127.0.0.1:99999/v1"],
)
def test_an_api_base_that_is_not_an_http_url_is_refused(prompts: Path, api_base: str) -> None:
    line = refused(str(prompts), "-m", "openai/fake", "--api-base", api_base, "--dry-run")
    assert f"api_base {api_base!r}" in line


def test_a_provider_nobody_knows_and_an_empty_model_name_are_refused(prompts: Path) -> None:
    assert "no provider is called 'foo'" in refused(str(prompts), "-m", "foo/bar", "--dry-run")
    assert "model name" in refused(str(prompts), "-m", "", "--dry-run")
    assert "no model" in refused(str(prompts), "-m", "openai/", "--dry-run")


def test_a_key_with_a_carriage_return_is_refused(prompts: Path) -> None:
    line = refused(str(prompts), "-m", "openai/gpt-5-mini", "--dry-run", env={"OPENAI_API_KEY": "sk-abc\r"})
    assert "OPENAI_API_KEY" in line and "control character" in line and "sk-abc" not in line


def test_toml_tables_are_checked_like_flags(prompts: Path, tmp_path: Path) -> None:
    negative = tmp_path / "negative.toml"
    negative.write_text('[[model]]\nname = "openai/a"\napi_base = "http://127.0.0.1:9/v1"\nprice = [-1.0, 2.0]\n')
    line = refused(str(prompts), "--models", str(negative), "--dry-run")
    assert "negative.toml" in line and "price" in line
    not_tables = tmp_path / "not_tables.toml"
    not_tables.write_text("model = [1, 2]\n")
    assert "is not a table" in refused(str(prompts), "--models", str(not_tables), "--dry-run")
    wrong_type = tmp_path / "wrong_type.toml"
    wrong_type.write_text('[[model]]\nname = "openai/a"\napi_base = "http://127.0.0.1:9/v1"\nrpm = "fast"\n')
    line = refused(str(prompts), "--models", str(wrong_type), "--dry-run")
    assert "wrong_type.toml" in line and "rpm" in line


def test_the_python_api_raises_the_error_the_command_line_prints(prompts: Path) -> None:
    dead = "http://127.0.0.1:9/v1"
    line = refused(str(prompts), "-m", "openai/fake", "--api-base", dead, "--rpm", "nan", "--dry-run")
    with pytest.raises(llmgather.InputError) as raised:
        llmgather.run(["x"], model="openai/fake", api_base=dead, rpm=math.nan)
    assert line == f"llmgather: error: {raised.value}"
    with pytest.raises(llmgather.InputError, match="no provider"):
        llmgather.run(["x"], model="foo/bar")
    with pytest.raises(llmgather.InputError, match="a single string"):
        llmgather.run("hello", model="openai/fake", api_base=dead)
    with pytest.raises(llmgather.InputError, match="model="):
        llmgather.run(["x"], model=None)  # type: ignore[arg-type]
    with pytest.raises(llmgather.InputError, match="must be a string"):
        llmgather.run(["x"], model="openai/fake", api_base=dead, api_key=123)


def test_the_openai_key_goes_to_no_other_endpoint_unless_named(fake_server, prompts: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: FakeServer = fake_server("--api-key", "sk-only-for-openai")
    env = {"OPENAI_API_KEY": "sk-only-for-openai"}
    out = tmp_path / "out.jsonl"
    unnamed = run_cli("run", str(prompts), "-o", str(out), "-m", "openai/fake", "--api-base", server.url, env=env)
    assert unnamed.returncode == 3, unnamed.stderr  # the fake refuses a request without the key: a fatal 401
    assert server.stats()["requests"] >= 1
    named = run_cli(
        "run", str(prompts), "-o", str(out), "-m", "openai/fake", "--api-base", server.url,
        "--api-key-env", "OPENAI_API_KEY", "--resume", env=env,
    )  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert all(row["error"] is None for row in read_jsonl(out))


def test_fallbacks_reach_the_python_api(fake_server) -> None:  # type: ignore[no-untyped-def]
    small: FakeServer = fake_server("--max-context", "5")
    large: FakeServer = fake_server()
    long_prompt = "a prompt much too long for the first model's context " * 3
    results = llmgather.run(
        [long_prompt, "short"],
        model="openai/small",
        fallbacks=[ModelConfig.build("openai/large", api_base=large.url)],
        api_base=small.url,
        max_retries=0,
    )
    assert [r.ok for r in results] == [True, True]
    assert results[0].answered_by == "openai/large" and results[1].answered_by is None


def test_a_config_is_frozen_and_built_the_same_from_keywords() -> None:
    model = ModelConfig.build("openai/a", api_base="http://127.0.0.1:9/v1", rpm=600, prices={"openai/a": [1, 2]})
    config = RunConfig.build([model], max_cost=1)
    assert config.models[0].limits.rpm == 600 and config.max_cost == 1
    with pytest.raises(AttributeError):
        config.max_cost = 2  # type: ignore[misc]


def test_a_model_of_a_server_of_ones_own_needs_its_url() -> None:
    # hosted_vllm/ names a server with no public endpoint: it used to go to api.openai.com.
    with pytest.raises(InputError, match="--api-base"):
        ModelConfig.build("hosted_vllm/llama-3.1-8b")
    assert ModelConfig.build("hosted_vllm/llama-3.1-8b", api_base="http://127.0.0.1:8000/v1").api_base


def test_provider_rules_reach_the_model_config() -> None:
    # Anthropic requires max_tokens (its backend sends one, which Anthropic reserves against the output limit)
    # and leaves cache reads out of its input limit; OpenAI does neither.
    claude = ModelConfig.build("anthropic/claude-haiku-4-5", api_key="k")
    assert (claude.default_max_tokens, claude.cache_reads_count) == (4096, False)
    gpt = ModelConfig.build("openai/gpt-5-mini", api_key="k")
    assert (gpt.default_max_tokens, gpt.cache_reads_count) == (None, True)


@pytest.mark.parametrize(
    ("api_base", "why"),
    [
        ("http://u:SECRETKEY123@127.0.0.1:8000/v1", "carries credentials"),
        ("http://127.0.0.1:8000/v1?key=SECRETKEY123", "query or fragment"),
    ],
)
def test_an_api_base_with_credentials_or_a_query_is_refused_and_the_secret_never_quoted(
    api_base: str, why: str
) -> None:
    # They were printed with the endpoint in the summary and the resume command.
    with pytest.raises(InputError, match=why) as refused:
        ModelConfig.build("openai/x", api_base=api_base)
    assert "SECRETKEY123" not in str(refused.value)
