"""Where the examples send requests: OpenAI when OPENAI_API_KEY is set, else the built-in fake provider."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Provider:
    models: list[str]
    api_base: str | None
    api_key: str | None
    fake: bool


@contextmanager
def provider(*fake_args: str) -> Iterator[Provider]:
    """Yield where to send requests; a fake provider is started on 127.0.0.1 and stopped afterwards."""
    if os.environ.get("OPENAI_API_KEY"):
        yield Provider(["openai/gpt-5-mini", "openai/gpt-5-nano"], None, os.environ["OPENAI_API_KEY"], fake=False)
        return
    server = subprocess.Popen(
        [sys.executable, "-m", "llmgather.fake", "--port", "0", *fake_args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        url = line.split()[-1]
        print(f"No OPENAI_API_KEY: using the built-in fake provider at {url}", file=sys.stderr)
        yield Provider(["openai/fake-large", "openai/fake-small"], url, "fake-key", fake=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
