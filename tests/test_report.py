"""`llmgather report`: one self-contained HTML file, checked in headless Chromium."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from browser import ensure_chromium, open_page
from conftest import FakeServer, read_jsonl, run_cli
from PIL import Image

from llmgather.report.charts import COLORS, RATE_LIMITED_COLOR


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture
def report(fake_server: Callable[..., FakeServer], tmp_path: Path) -> tuple[Path, Path]:
    # Two models behind one server's 2,400 rpm: each learns the whole limit, so together they earn 429s.
    server = fake_server("--rpm", "2400", "--latency", "0.05", "--jitter", "0.1", "--fail-rate", "0.05")
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"report {i}"}) + "\n" for i in range(150)))
    out = tmp_path / "out.jsonl"
    done = run_cli(
        *("run", str(source), "-o", str(out), "-m", "openai/small", "-m", "openai/large", "--api-base", server.url),
        *("--price", "openai/small=100,400", "--price", "openai/large=1000,4000", "--concurrency", "20"),
    )
    assert done.returncode == 0, done.stderr
    page = tmp_path / "report.html"
    made = run_cli("report", str(out), "-o", str(page))
    assert made.returncode == 0, made.stderr
    return out, page


def test_the_report_holds_every_series_and_fetches_nothing(report: tuple[Path, Path]) -> None:
    out, page = report
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # nothing to load from elsewhere
    assert "<script" not in text
    records = read_jsonl(out)
    for chart in ("latency-chart", "timeline-chart", "cost-chart"):
        section = text.split(f'id="{chart}"', 1)[1].split("</svg>", 1)[0]
        assert set(re.findall(r'class="series" data-model="([^"]+)"', section)) == {"openai/small", "openai/large"}
    marks = len(re.findall(r'class="mark rate-limited"', text))
    assert marks == sum(1 for r in records if r["rate_limited"]) > 0
    assert len(re.findall(r'class="mark retried"', text)) == sum(
        1 for r in records if not r["rate_limited"] and r["attempts"] > 1
    )


def test_the_report_draws_its_charts_in_headless_chromium(report: tuple[Path, Path], chromium: str) -> None:
    _, page = report
    seen = open_page(chromium, page.as_uri(), width=900, height=1400)
    assert seen.requested == [page.as_uri()]  # the file itself, and no other request to any host
    image = Image.open(io.BytesIO(seen.screenshot_png)).convert("RGB")
    counts = {color: count for count, color in image.getcolors(maxcolors=1 << 24) or []}
    for color in (*COLORS[:2], RATE_LIMITED_COLOR):  # the legend's keys alone are 144 pixels each
        rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 300, f"{color} is hardly drawn: {counts.get(rgb, 0)} pixels"
