"""`--dry-run --batch` estimates at the batch price: what the run will be billed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli, write_jsonl
from test_durability import prompts


def estimated_cost(stdout: str) -> float:
    line = next(line for line in stdout.splitlines() if line.startswith("openai/gpt-5-mini"))
    return float(line.split()[-1])


def test_a_dry_run_of_a_batch_run_costs_half_the_online_estimate(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", prompts(300, "dry"))
    common = ("run", str(source), "-o", str(tmp_path / "out.jsonl"), "-m", "openai/gpt-5-mini", "--dry-run")
    online = run_cli(*common)
    batch = run_cli(*common, "--batch")
    assert online.returncode == batch.returncode == 0, online.stderr + batch.stderr
    assert estimated_cost(batch.stdout + batch.stderr) == pytest.approx(
        estimated_cost(online.stdout + online.stderr) / 2, abs=1e-4
    )
