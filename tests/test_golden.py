"""Refactors keep numbers: the golden runs' full metrics equal those pinned before the second redesign (1e-9)."""

from __future__ import annotations

import json

import pytest

from tests.golden_runs import GOLDEN, RUNS, differences, golden_metrics


@pytest.mark.parametrize("name", sorted(RUNS))
def test_golden_run_keeps_its_numbers(name: str) -> None:
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    got = golden_metrics(RUNS[name])
    assert len(expected) > 40
    assert not differences(expected, got), differences(expected, got)[:20]
