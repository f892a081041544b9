"""The report as a user reads it: a compact table, filters, chosen columns and CSV, on a real sqlite store."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from runner import report
from runner.logger import MLflowLogger
from tests.conftest import run_cli


def _runs(tracking_uri: str) -> dict[str, str]:
    logger = MLflowLogger("ranked", tracking_uri)
    ids = {}
    for name, data, lookback, value in (("a", "sp500", 5, 1.5), ("b", "synthetic", 20, 2.5), ("c", "sp500", 60, 0.5)):
        with logger.start_run(run_name=name, tags={"data": data, "strategy": "momentum", "model": "none"}) and logger:
            logger.log_params({"strategy._target_": "strategies.momentum.Momentum", "strategy.lookback": lookback,
                               "data.n_bars": 2000 if data == "sp500" else 500, "data.source": data})
            logger.log_metrics({"val_sharpe_ratio": value, "test_sharpe_ratio": value / 2, "test_cagr": value / 10})
            ids[name] = logger.run_id
    return ids


def test_the_default_table_is_compact_and_names_what_differs(tmp_path: Path, tracking_uri: str,
                                                             cli_env: dict) -> None:
    _runs(tracking_uri)
    done = run_cli(["runner.report", "--experiment", "ranked"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines[1].split()
    assert header[:4] == ["#", "run", "name", "val_sharpe_ratio"] and "lookback" in header  # its last key: unique
    assert "strategy._target_" not in done.stdout and "Momentum" not in done.stdout  # no class paths
    assert [line.split()[1] for line in lines[2:5]] == ["b", "a", "c"]
    assert max(map(len, lines)) <= 100 and "None" not in done.stdout and " nan" not in done.stdout
    assert len(header) == len(set(header))  # no column twice
    # data.n_bars applies to data=synthetic only: shown for b, blank for the sp500 runs, so it does not "differ"
    assert "data.n_bars" not in header


def test_filters_columns_and_csv(tracking_uri: str, capsys: pytest.CaptureFixture) -> None:
    ids = _runs(tracking_uri)
    assert report.main(["--experiment", "ranked", "--data", "sp500", "--format", "csv",
                        "--columns", "test_cagr,strategy.lookback,data"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run_id"] for r in rows] == [ids["a"], ids["c"]]
    assert rows[0]["strategy.lookback"] == "5" and float(rows[0]["test_cagr"]) == pytest.approx(0.15)
    assert {r["data"] for r in rows} == {"sp500"}
    assert report.main(["--experiment", "ranked", "--strategy", "mean_reversion"]) == 2
    assert "has a finite 'val_sharpe_ratio'" in capsys.readouterr().err
