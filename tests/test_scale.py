"""Runs that scale with the bars: the Parquet record is exact, the JSON view keeps what matters, figures
are reduced without changing what they show, and large CSVs load the same through pyarrow."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from runner.config.schema import BacktestConf
from runner.data import series
from runner.data.loader import load_data
from runner.engine.backtest import run_backtest
from runner.logger import MLflowLogger
from runner.tracking.tables import JSON_ROWS, thinned_rows
from runner.views.figures import equity_figure, new_figure, reduce_for_drawing
from tests.conftest import data_config


def _long_result(n: int = 40_000, seed: int = 3):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    index = pd.date_range("2021-01-04 09:30", periods=n, freq="min")
    weights = np.sign(np.sin(np.arange(n) / 300.0))
    return run_backtest(close, weights, int(0.6 * n), int(0.8 * n), BacktestConf(periods_per_year=98_280), index)


def test_the_parquet_record_is_the_backtest_exactly_and_the_json_view_keeps_the_boundaries(
        tmp_path: Path, tracking_uri: str) -> None:
    result = _long_result()
    logger = MLflowLogger("scale", tracking_uri)
    with logger.start_run(run_name="long") and logger:
        run_id = logger.run_id
        logger.log_backtest_results(result.to_results())
    client = MlflowClient(tracking_uri)
    full = pd.read_parquet(client.download_artifacts(run_id, "backtest/portfolio_values.parquet", str(tmp_path)))
    assert list(full.columns) == ["timestamp", "segment", "close", "weight", "strategy_return", "equity",
                                  "benchmark_equity", "drawdown"]
    for column, array in (("close", result.close), ("weight", result.weights),
                          ("strategy_return", result.strategy_returns), ("equity", result.equity),
                          ("benchmark_equity", result.benchmark_equity), ("drawdown", result.drawdown)):
        assert np.array_equal(full[column].to_numpy(), array, equal_nan=True), column  # bit for bit
    assert (pd.DatetimeIndex(full["timestamp"]) == result.index).all()
    assert list(full["segment"].astype(str)) == list(result.segment_labels().astype(str))

    view = json.loads(Path(client.download_artifacts(run_id, "backtest/portfolio_values.json", str(tmp_path)))
                      .read_text())
    stamps = [row[0] for row in view["data"]]
    assert len(stamps) <= JSON_ROWS + 8 and view["columns"] == list(full.columns)
    for start, stop in result.bounds.values():  # the first and last bar of every segment, so also of the run
        for bar in (start, stop - 1):
            assert result.index[bar].isoformat() in stamps
    meta = json.loads(Path(client.download_artifacts(run_id, "backtest/results.json", str(tmp_path))).read_text())
    assert meta["tables"]["portfolio_values"] == {"rows": 40_000, "full_record": "backtest/portfolio_values.parquet",
                                                  "json_view": "backtest/portfolio_values.json",
                                                  "json_rows": len(stamps)}
    tags = json.loads(client.get_run(run_id).data.tags["mlflow.loggedArtifacts"])
    assert {"path": "backtest/portfolio_values.json", "type": "table"} in tags


def test_callers_can_force_either_format(tmp_path: Path, tracking_uri: str) -> None:
    result = _long_result(12_000)
    logger = MLflowLogger("scale", tracking_uri)
    client = MlflowClient(tracking_uri)
    for tables, expected in (("json", {"trades.json", "fills.json", "portfolio_values.json"}),
                             ("parquet", {"trades.parquet", "fills.parquet", "portfolio_values.parquet"})):
        with logger.start_run(run_name=tables) and logger:
            logger.log_backtest_results(result.to_results(), tables=tables)
            run_id = logger.run_id
        files = {Path(a.path).name for a in client.list_artifacts(run_id, "backtest")}
        assert files == expected | {"results.json"}
    rows = json.loads(Path(client.download_artifacts(client.search_runs(
        [logger.experiment_id], "attributes.run_name = 'json'")[0].info.run_id, "backtest/portfolio_values.json",
        str(tmp_path))).read_text())["data"]
    assert len(rows) == 12_000  # forced JSON is the full record
    with logger.start_run(run_name="bad") and logger, pytest.raises(ValueError, match="allowed: auto, parquet, json"):
        logger.log_backtest_results(result.to_results(), tables="csv")


def test_thinning_keeps_every_segment_boundary() -> None:
    frame = pd.DataFrame({"segment": ["train"] * 50_001 + ["val"] * 7 + ["test"] * 20_000})
    rows = thinned_rows(frame, limit=1000)
    assert {0, 50_000, 50_001, 50_007, 50_008 - 1, 70_007} <= set(rows.tolist()) and len(rows) <= 1010
    assert np.all(np.diff(rows) > 0)
    folds = pd.DataFrame({"fold": np.repeat([0, 1, 2], 30_000)})
    assert {0, 29_999, 30_000, 59_999, 60_000, 89_999} <= set(thinned_rows(folds, limit=500).tolist())
    small = pd.DataFrame({"segment": ["train"] * 10})
    assert thinned_rows(small, limit=1000).tolist() == list(range(10))


def test_the_reduced_curve_keeps_its_extremes_and_draws_the_same() -> None:
    rng = np.random.default_rng(11)
    n = 1_000_000
    y = np.cumsum(rng.normal(0, 1, n))
    y[777_777] += 400.0  # a one-bar spike must stay visible
    x = np.arange(n, dtype=float)
    rx, ry = reduce_for_drawing(x, y, columns=2000)
    assert len(ry) <= 4 * 2000 and ry.max() == y.max() and ry.min() == y.min()
    assert rx[0] == 0 and rx[-1] == n - 1 and np.all(np.diff(rx) > 0)

    def pixels(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        figure = new_figure(11, 3)
        axis = figure.subplots()
        axis.plot(xs, ys, lw=1.0, color="black")
        axis.set_xlim(0, n - 1)
        axis.set_ylim(y.min() - 1, y.max() + 1)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)  # the resolution runs save figures at
        buffer.seek(0)
        from matplotlib import image

        return image.imread(buffer, format="png")[..., 0] < 0.5

    def near(ink: np.ndarray) -> np.ndarray:  # ink, or within one pixel of ink
        out = ink.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                out |= np.roll(np.roll(ink, dy, 0), dx, 1)
        return out

    full, reduced = pixels(x, y), pixels(rx, ry)
    assert full.sum() > 5000  # the curve is drawn
    # At the saved resolution every inked pixel of either drawing lies within a pixel of the other's ink
    # (anti-aliased edges differ by a pixel here and there; no stroke, spike or drawdown is lost or added).
    assert not (full & ~near(reduced)).any() and not (reduced & ~near(full)).any()


def test_the_equity_figure_of_a_long_run_draws_reduced_curves_with_the_extremes() -> None:
    result = _long_result(200_000)
    figure = equity_figure(result)
    equity_axis = figure.axes[0]
    drawn = np.concatenate([line.get_ydata() for line in equity_axis.get_lines()[::2]])
    assert len(drawn) < 20_000  # not 200,000 points
    assert drawn.max() == result.equity.max() and drawn.min() == result.equity.min()


def test_a_large_csv_loads_the_same_through_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n = 30_000
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    frame = pd.DataFrame({"Date": pd.date_range("2019-06-03 09:30", periods=n, freq="min"),
                          "Open": close.round(3), "High": (close * 1.001).round(3), "Low": (close * 0.999).round(3),
                          "Close": close.round(3), "Volume": rng.integers(1, 1000, n)})
    path = tmp_path / "minutes.csv"
    frame.to_csv(path, index=False)
    monkeypatch.setattr(series, "PYARROW_CSV_BYTES", 10**12)
    plain = load_data(data_config("csv", path=str(path))).bars
    monkeypatch.setattr(series, "PYARROW_CSV_BYTES", 0)
    arrow = load_data(data_config("csv", path=str(path))).bars
    pd.testing.assert_frame_equal(arrow, plain, check_index_type=False)
    assert (arrow.index == plain.index).all() and arrow.index.name == "timestamp"
