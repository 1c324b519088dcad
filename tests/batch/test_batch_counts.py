"""What the live view says of a batch run: each state's batches, and an ETA from their progress."""

from __future__ import annotations

import time

import pytest

from llmgather.batch.counts import BatchCounts, BatchView


def test_the_eta_comes_from_each_batch_s_own_pace() -> None:
    now = time.time()
    counts = BatchCounts()
    counts.views[1] = BatchView(1, "b1", "in_progress", 1000, 250, 0, submitted_at=now - 30)  # 30 s for a quarter
    counts.views[2] = BatchView(2, "b2", "in_progress", 1000, 500, 0, submitted_at=now - 30)
    assert counts.eta_s() == pytest.approx(90, abs=1)  # the slower one: three quarters more at its pace


def test_batches_that_report_no_progress_are_timed_by_the_ones_that_ended() -> None:
    """Anthropic's counts say nothing until a batch ends: its ETA comes from how long the ended batches took."""
    now = time.time()
    counts = BatchCounts()
    counts.views[1] = BatchView(1, "b1", "ended", 100, 100, 0, submitted_at=now - 100, ended_at=now - 40)
    counts.views[2] = BatchView(2, "b2", "in_progress", 100, 0, 0, submitted_at=now - 20)
    assert counts.eta_s() == pytest.approx(40, abs=1)  # they took 60 s; this one has run 20


def test_nothing_to_go_by_is_no_eta() -> None:
    counts = BatchCounts()
    counts.views[1] = BatchView(1, "b1", "validating", 100, 0, 0, submitted_at=time.time())
    assert counts.eta_s() is None
    assert counts.states_text() == "batches 1 validating"


def test_the_states_line_counts_each_state_and_the_progress_of_those_in_progress() -> None:
    counts = BatchCounts()
    now = time.time()
    counts.views[1] = BatchView(1, "b1", "in_progress", 1000, 340, 2, submitted_at=now)
    counts.views[2] = BatchView(2, "b2", "validating", 1000, 0, 0, submitted_at=now)
    counts.views[3] = BatchView(3, "b3", "ended", 1000, 1000, 0, submitted_at=now, ended_at=now)
    assert counts.states_text() == "batches 1 validating, 1 in_progress 340/1,000, 1 ended"
