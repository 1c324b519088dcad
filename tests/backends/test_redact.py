"""A key never leaves through a message: whatever a provider echoes back is redacted before anyone sees it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FakeServer, read_jsonl, run_cli, write_jsonl

from llmgather.backends.redact import MAX_QUOTE, REDACTED, redact

# Shaped like no provider's key, so only knowing the key itself can catch it.
KEY = "llmg-test-Q7vX2pL9wK4mZ8rT"


def test_a_key_echoed_in_a_malformed_answer_appears_nowhere(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server("--api-key", KEY)
    prompts = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "body", "prompt": "[[fake malformed=body]]"},
            {"id": "chunk", "prompt": "[[fake malformed=chunk]]", "stream": True},
            {"id": "fine", "prompt": "an honest answer"},
        ],
    )
    out = tmp_path / "out.jsonl"
    # The key reaches this endpoint either way: by default today, by --api-key-env once keys stay home.
    proc = run_cli(
        "run", str(prompts), "-o", str(out), "-m", "openai/fake", "--api-base", server.url,
        "--api-key-env", "OPENAI_API_KEY", "--max-retries", "0",
        env={"OPENAI_API_KEY": KEY},
    )  # fmt: skip

    results = {r["id"]: r for r in read_jsonl(out)}
    assert results["fine"]["error"] is None  # the key was sent, and accepted
    for rid in ("body", "chunk"):
        assert results[rid]["error"] is not None, results[rid]
        assert REDACTED in results[rid]["error"]["message"]  # the server did echo it, and it was caught
    everything = out.read_text() + proc.stdout + proc.stderr
    assert KEY not in everything
    assert KEY[:10] not in everything


SHAPED = [
    ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
    ('{"x-api-key": "zq81kd93jf02ls"}', "zq81kd93jf02ls"),
    ("api-key=zq81kd93jf02ls&model=x", "zq81kd93jf02ls"),
    ("proxy saw sk-proj-AbCdEf0123456789xyz in the header", "AbCdEf0123456789"),
    ("anthropic said sk-ant-api03-AbCdEf0123456789", "AbCdEf0123456789"),
    ("GET https://generativelanguage.googleapis.com/v1?key=AIzaSyA1234567890abcdefghijk", "1234567890abcdef"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNz"),
]


@pytest.mark.parametrize(("text", "secret_part"), SHAPED)
def test_anything_shaped_like_a_key_is_redacted_even_when_the_key_is_unknown(text: str, secret_part: str) -> None:
    assert secret_part not in redact(text)


def test_plain_provider_messages_pass_unchanged() -> None:
    for text in (
        "Rate limit reached for requests. Please try again later.",
        "This model's maximum context length is 8192 tokens.",
        "Token limit exceeded; the model `gpt-5-mini` does not exist.",
        "Incorrect API key provided: sk-proj-****abcd.",
    ):
        assert redact(text, KEY) == text


def test_a_piece_of_the_key_goes_too() -> None:
    # A server that cuts its own body may cut the key: its head or tail is still a secret.
    assert KEY[:12] not in redact(f"echo: {KEY[:12]}", KEY)
    assert KEY[-12:] not in redact(f"echo: {KEY[-12:]}...", KEY)


def test_a_long_quote_is_bounded_and_never_cut_through_a_key() -> None:
    filler = "word " * 200
    assert len(redact(filler)) <= MAX_QUOTE + 1
    # Cut just past the key's first characters: what is left of it goes with the cut.
    for offset in range(1, 12):
        text = "x" * (MAX_QUOTE - offset) + " " + KEY
        quoted = redact(text, KEY)
        assert len(quoted) <= MAX_QUOTE + 1
        assert not any(KEY[:n] in quoted for n in range(4, len(KEY))), quoted
    huge = "y" * 1_000_000 + KEY
    assert KEY not in redact(huge, KEY)
