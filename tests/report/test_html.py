"""`llmgather report`: one self-contained HTML file, checked in headless Chromium."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser import open_page
from conftest import FakeServer, read_jsonl, run_cli, start_fake_server
from PIL import Image


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """One run's output and its report, shared by the tests that only read them."""
    # Two models behind one server's 2,400 rpm: each learns the whole limit, so together they earn 429s.
    server = start_fake_server("--rpm", "2400", "--latency", "0.05", "--jitter", "0.1", "--fail-rate", "0.05")
    try:
        yield make_report(server, tmp_path_factory.mktemp("report"))
    finally:
        server.stop()


def make_report(server: FakeServer, tmp_path: Path) -> tuple[Path, Path]:
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


def legend(page_text: str) -> dict[str, str]:
    """What each colour of the page stands for: a model, 'got a 429' or 'retried' -> '#rrggbb'."""
    keys = re.findall(
        r"""<span class=["']key["']><i style=["']background:(#[0-9a-f]{6})["']></i>([^<]+)</span>""", page_text
    )
    return {label: color for color, label in keys}


def test_the_report_draws_its_charts_in_headless_chromium(report: tuple[Path, Path], chromium: str) -> None:
    _, page = report
    colors = legend(page.read_text())
    seen = open_page(chromium, page.as_uri(), width=900, height=1400)
    assert seen.requested == [page.as_uri()]  # the file itself, and no other request to any host
    image = Image.open(io.BytesIO(seen.screenshot_png)).convert("RGB")
    counts = {color: count for count, color in image.getcolors(maxcolors=1 << 24) or []}
    for key in ("openai/small", "openai/large", "got a 429"):  # the legend's keys alone are 144 pixels each
        rgb = tuple(int(colors[key][i : i + 2], 16) for i in (1, 3, 5))
        assert counts.get(rgb, 0) > 300, f"{key} ({colors[key]}) is hardly drawn: {counts.get(rgb, 0)} pixels"


def test_the_report_reads_the_output_once_so_it_can_come_from_a_pipe(report: tuple[Path, Path]) -> None:
    out, page = report
    piped = out.parent / "piped.html"
    made = run_cli("report", "/dev/stdin", "-o", str(piped), stdin=out.read_text())  # as from <(zcat out.jsonl.gz)
    assert made.returncode == 0, made.stderr

    def untitled(path: Path) -> str:
        return re.sub(r"<title>.*?</title>|<h1>.*?</h1>", "", path.read_text())

    assert untitled(piped) == untitled(page)


def test_the_summary_counts_429s_beside_the_retries_not_inside_them(
    fake_server: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_server()
    # With one retry allowed: a 429 then an answer (one retry), or two 429s (one retry, and a last 429 kept).
    prompts = [f"twice refused {i} [[fake status=429 times=2]]" for i in range(4)]
    prompts += [f"once refused {i} [[fake status=429 times=1]]" for i in range(4)]
    prompts += [f"plain {i}" for i in range(12)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    done = run_cli(
        "run",
        str(source),
        "-o",
        str(tmp_path / "out.jsonl"),
        "-m",
        "openai/fake",
        "--api-base",
        server.url,
        "--max-retries",
        "1",
    )
    assert done.returncode == 1, done.stderr  # the four refused twice
    stats = server.stats()
    refused, retries = stats["by_status"]["429"], stats["requests"] - len(prompts)
    assert (refused, retries) == (12, 8)
    counts = [line for line in done.stderr.splitlines() if line.lstrip().startswith(("attempts ", "retries "))]
    assert len(counts) == 1, counts
    assert counts[0].startswith(f"  attempts   {retries} retries; {refused} answered 429, 0 timed out; "), counts
