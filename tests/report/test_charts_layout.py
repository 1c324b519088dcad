"""The report's charts read at a glance: round ticks, the page's full width, one colour per model in every
chart, and a legend of only what each chart draws; checked in the HTML and, drawn, in headless Chromium."""

from __future__ import annotations

import io
import math
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import open_page
from conftest import run_cli, write_jsonl
from PIL import Image

from llmgather.report.axes import MAX_INTERVALS, axis_for

CHARTS = ("latency-chart", "timeline-chart", "cost-chart")
PAGE_MARGIN_PX = 32  # the page's 2em


def is_round_step(step: float) -> bool:
    """1, 2 or 5 times a power of ten."""
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    return any(math.isclose(mantissa, m) for m in (1, 2, 5))


@pytest.mark.parametrize("top", [0.13, 0.27, 0.84, 1.7, 0.004, 0.6, 0.7, 3, 7, 99, 112, 150, 1234, 86_400])
def test_an_axis_climbs_from_zero_in_round_steps_just_past_the_data(top: float) -> None:
    axis = axis_for(top)
    assert axis.ticks()[0] == 0 and is_round_step(axis.step)
    assert axis.top >= top > axis.top - axis.step  # past the data, by less than one step
    assert 1 <= axis.intervals <= MAX_INTERVALS
    labels = [axis.label(v) for v in axis.ticks()]
    assert all(len(label.split(".")[-1]) <= 3 for label in labels if "." in label), labels  # no float noise


def test_tick_labels_read_as_written() -> None:
    assert [axis_for(1.7).label(v) for v in axis_for(1.7).ticks()] == ["0", "0.5", "1", "1.5", "2"]
    assert [axis_for(0.3).label(v) for v in axis_for(0.3).ticks()][:4] == ["0", "0.05", "0.1", "0.15"]
    assert [axis_for(1234).label(v) for v in axis_for(1234).ticks()] == ["0", "500", "1,000", "1,500"]
    counts = axis_for(3, whole=True)  # a count never has a tick at 0.5
    assert [counts.label(v) for v in counts.ticks()] == ["0", "1", "2", "3"]


def records(marks: bool = True) -> list[dict[str, Any]]:
    """Three models, latencies around 0.13, 0.27 and 0.84 s (the old axes read 0.13, 0.27, 0.84, 1.7); some
    429s and retries when `marks`; the last model without a price."""
    rng = random.Random(11)
    lines = []
    for model, latency, cost in (("openai/a", 0.13, 1e-4), ("openai/b", 0.27, 3e-4), ("openai/c", 0.84, None)):
        for i in range(120):
            seconds = round(latency * (0.5 + rng.random()), 4)
            limited = int(marks and rng.random() < 0.05)
            attempts = 1 + limited + int(marks and rng.random() < 0.05)
            lines.append(
                {"id": i, "model": model, "content": "x", "latency_s": seconds, "attempts": attempts, "error": None}
                | {"usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}, "cost_usd": cost}
                | {"cached": False, "rate_limited": limited, "finished_at": 1.7e9 + i * 0.0137 + seconds}
            )
    return lines


def report_of(tmp_path: Path, lines: list[dict[str, Any]], name: str = "out") -> str:
    out = write_jsonl(tmp_path / f"{name}.jsonl", lines)
    page = tmp_path / f"{name}.html"
    made = run_cli("report", str(out), "-o", str(page))
    assert made.returncode == 0, made.stderr
    return page.read_text()


def section(page: str, chart: str) -> str:
    return page.split(f'id="{chart}"', 1)[1].split("</div>", 1)[0]


KEY = re.compile(r"""<span class=["']key["']><i style=["']background:#[0-9a-f]{6}["']></i>([^<]+)</span>""")


def legend_of(html_part: str) -> list[str]:
    return KEY.findall(html_part)


def colours(html_part: str) -> dict[str, str]:
    """model -> the colour its series is drawn in."""
    drawn = re.findall(r'class="series" data-model="([^"]+)"[^>]*?(?:stroke|fill)="(#[0-9a-f]{6})"', html_part)
    by_model: dict[str, set[str]] = {}
    for model, colour in drawn:
        by_model.setdefault(model, set()).add(colour)
    assert all(len(c) == 1 for c in by_model.values()), by_model
    return {model: c.pop() for model, c in by_model.items()}


def test_every_axis_has_round_ticks_from_zero(tmp_path: Path) -> None:
    page = report_of(tmp_path, records())
    for chart in ("latency-chart", "timeline-chart"):
        for axis in ("x", "y"):
            labels = re.findall(rf'<text class="tick {axis}"[^>]*>([^<]+)</text>', section(page, chart))
            values = [float(label.replace(",", "")) for label in labels]
            assert len(values) >= 2 and values[0] == 0, (chart, axis, labels)
            step = values[1]
            assert is_round_step(step), (chart, axis, labels)
            assert all(math.isclose(v, i * step) for i, v in enumerate(values)), (chart, axis, labels)
            assert all(label == f"{float(label.replace(',', '')):,g}" for label in labels), labels  # no 0.130000


def test_one_colour_per_model_in_every_chart_and_a_legend_of_what_each_draws(tmp_path: Path) -> None:
    page = report_of(tmp_path, records())
    latency, timeline, cost = (colours(section(page, chart)) for chart in CHARTS)
    assert latency == timeline and len(set(latency.values())) == 3
    assert cost == {m: c for m, c in latency.items() if m != "openai/c"}  # the model without a price has no bar
    assert "No price known for openai/c" in section(page, "cost-chart")
    assert legend_of(section(page, "latency-chart")) == ["openai/a", "openai/b", "openai/c"]
    assert legend_of(section(page, "timeline-chart")) == ["openai/a", "openai/b", "openai/c", "got a 429", "retried"]
    assert legend_of(section(page, "cost-chart")) == []  # each bar is named beside it
    calm = report_of(tmp_path, records(marks=False), "calm")
    assert legend_of(section(calm, "timeline-chart")) == ["openai/a", "openai/b", "openai/c"]  # nothing marked
    before_charts = calm.split("<h2>", 1)[0]
    assert legend_of(before_charts) == []  # no page-wide legend of keys that a chart may not draw


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp_path = tmp_path_factory.mktemp("layout")
    report_of(tmp_path, records())
    yield tmp_path / "out.html"


def longest_grey_run(image: Image.Image) -> int:
    """The longest horizontal run of mid-grey pixels: an axis line (#888, or lighter where a line between two
    rows of pixels is blended with the white) as drawn. The grid (#eee) and the table's borders (#ccc) are
    lighter, the text too short."""
    pixels = image.load()
    assert pixels is not None
    best = 0
    for y in range(image.height):
        run = 0
        for x in range(image.width):
            r, g, b = pixels[x, y]
            run = run + 1 if r == g == b and 100 <= r <= 200 else 0
            best = max(best, run)
    return best


@pytest.mark.parametrize("width", [900, 1400])
def test_the_charts_span_the_page_in_chromium(chromium: str, page_file: Path, width: int) -> None:
    seen = open_page(chromium, page_file.as_uri(), width=width, height=1400)
    image = Image.open(io.BytesIO(seen.screenshot_png)).convert("RGB")
    (tmp := page_file.parent / f"shot-{width}.png").write_bytes(seen.screenshot_png)
    axis = longest_grey_run(image)
    content = width - 2 * PAGE_MARGIN_PX
    # The plot area is the chart's width less its tick labels' margin: at least 85% of the page's content.
    assert axis >= 0.85 * content, f"the x axis is {axis}px of {content}px at {width}px ({tmp})"
    assert axis <= content
