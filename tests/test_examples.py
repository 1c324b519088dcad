"""The example scripts run as a user runs them, against the fake provider (no key set)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("evaluate.py", "100 questions"),
        ("compare.py", "50/50 ok"),
        ("agents.py", "20 agents, 220 messages"),
    ],
)
def test_example_runs_against_the_fake_provider(script: str, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT / "examples",
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
