"""Walk-forward evaluation: the fold layout, and through the CLI the stitched record, look-ahead, the gap,
bad settings and sweeps that select by the out-of-sample record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from runner.data.series import DataError
from runner.evaluation.walk_forward import WalkForwardEvaluation, fold_layout
from tests.conftest import run_cli

WALK = {"folds": 5, "window": "expanding", "train_bars": None, "val_bars": None, "test_bars": None, "gap": 1}


@pytest.mark.parametrize("window", ["expanding", "rolling"])
def test_folds_are_back_to_back_after_their_gap(window: str) -> None:
    folds = fold_layout(1000, WalkForwardEvaluation(**{**WALK, "folds": 4, "window": window, "train_bars": 400,
                                                          "val_bars": 80, "gap": 3}),
                        with_model=True, min_train=50)
    assert [f.test_start for f in folds] == [403, 552, 701, 850] and folds[-1].test_end == 1000
    for before, after in zip(folds, folds[1:], strict=False):
        assert before.test_end == after.test_start  # one continuous out-of-sample record
    for fold in folds:
        assert fold.test_start - fold.train_end == 3 and fold.train_end - fold.val_start == 80
        assert fold.train_start == (0 if window == "expanding" else fold.train_end - 400)


@pytest.mark.parametrize("changes,message", [
    ({"folds": 400}, "walk-forward does not fit the data"),
    ({"gap": -1}, "evaluation.gap=-1 must be an integer >= 1"),
    ({"gap": 0}, "the target horizon"),
    ({"train_bars": 5000}, "walk-forward does not fit the data"),
    ({"train_bars": 30}, "evaluation.train_bars=30 is too short"),
    ({"window": "sliding"}, "allowed: expanding, rolling"),
])
def test_settings_that_do_not_fit_are_named(changes: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        fold_layout(1000, WalkForwardEvaluation(**{**WALK, **changes}), with_model=True, min_train=40)


def _csv(path: Path, n: int = 900, seed: int = 4, bump_after: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, n)))
    if bump_after is not None:  # every bar after bump_after changes
        close[bump_after + 1:] *= np.exp(np.cumsum(rng.normal(0, 0.02, n - bump_after - 1)))
    pd.DataFrame({"date": pd.bdate_range("2010-01-04", periods=n), "close": close}).to_csv(path, index=False)
    return path


def _table(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> pd.DataFrame:
    return pd.read_parquet(client.download_artifacts(run_id, f"backtest/{name}.parquet", str(tmp_path)))


def _last_run(tracking_uri: str) -> tuple[MlflowClient, object]:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("trading_experiment")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])[0]


def test_too_many_folds_stop_before_any_run_exists(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=300",
                    "evaluation=walk_forward", "evaluation.folds=200"], cli_env, tmp_path)
    assert done.returncode == 2 and "walk-forward does not fit the data" in done.stderr
    assert "evaluation.folds=" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()])


@pytest.mark.slow
def test_a_rule_stitched_out_of_sample_equals_the_holdout_backtest(tmp_path: Path, cli_env: dict,
                                                                   tracking_uri: str) -> None:
    common = ["runner", "+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=1200"]
    done = run_cli([*common, "evaluation=walk_forward", "evaluation.folds=4"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "oos_sharpe_ratio =" in done.stdout and "test sharpe_ratio per fold:" in done.stdout
    client, walk = _last_run(tracking_uri)
    assert run_cli(common, cli_env, tmp_path).returncode == 0
    _, holdout = _last_run(tracking_uri)
    stitched = _table(client, walk.info.run_id, "walk_forward", tmp_path / "w")
    bars = _table(client, holdout.info.run_id, "portfolio_values", tmp_path / "h").set_index("timestamp")
    same = bars.loc[stitched["timestamp"]]
    np.testing.assert_array_equal(stitched["strategy_return"].to_numpy(), same["strategy_return"].to_numpy())
    np.testing.assert_array_equal(stitched["weight"].to_numpy(), same["weight"].to_numpy())
    assert sorted(stitched["fold"].unique()) == [0, 1, 2, 3]
    metrics = walk.data.metrics
    equity = np.cumprod(1 + stitched["strategy_return"].to_numpy()) * 100_000
    assert metrics["oos_total_return"] == pytest.approx(equity[-1] / 100_000 - 1, rel=1e-12)
    history = client.get_metric_history(walk.info.run_id, "fold_test_sharpe_ratio")
    assert [m.step for m in history] == [0, 1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(walk.info.run_id, "figures")}
    assert artifacts == {"figures/walk_forward.png"}


@pytest.mark.slow
def test_a_refitted_model_never_sees_later_bars_and_keeps_its_gap(tmp_path: Path, cli_env: dict,
                                                                  tracking_uri: str) -> None:
    command = ["runner", "+strategy=momentum", "model=linear", "trainer.epochs=2", "data=csv",
               "evaluation=walk_forward", "evaluation.folds=3", "evaluation.gap=2", "evaluation.train_bars=400"]
    weights, folds = [], None
    client = MlflowClient(tracking_uri)
    for name, bump in (("plain", None), ("bumped", 700)):  # 700 lies in fold 1's test stretch (568..733)
        csv = _csv(tmp_path / f"{name}.csv", bump_after=bump)
        done = run_cli([*command, f"data.path={csv}"], cli_env, tmp_path)
        assert done.returncode == 0, done.stderr
        _, run = _last_run(tracking_uri)
        weights.append(_table(client, run.info.run_id, "walk_forward", tmp_path / name).set_index("timestamp"))
        folds = _table(client, run.info.run_id, "folds", tmp_path / name)
        models = client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run.info.run_id}'")
        assert [m.name for m in models] == ["model"]  # the last fold's model is logged, once
    index = pd.bdate_range("2010-01-04", periods=900)
    t = index[700]
    before = weights[0].index <= t
    np.testing.assert_array_equal(weights[0].loc[before, "weight"], weights[1].loc[before, "weight"])
    assert not np.array_equal(weights[0]["strategy_return"], weights[1]["strategy_return"])  # the bump mattered
    for row in folds.itertuples():  # no training or validation target within `gap` bars of the test stretch
        last_target_bar = index.get_loc(row.val_end) + 1  # row t's target is bar t+1's return
        assert last_target_bar < index.get_loc(row.test_start)
        assert index.get_loc(row.test_start) - index.get_loc(row.val_end) - 1 == 2  # exactly gap bars left out


@pytest.mark.slow
def test_a_walk_forward_sweep_selects_by_the_out_of_sample_record(tmp_path: Path, cli_env: dict) -> None:
    done = run_cli(["runner", "-m", "+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=1000",
                    "evaluation=walk_forward", "evaluation.folds=3", "strategy.lookback=5,20,40"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    assert summary["metric"] == "oos_sharpe_ratio" and summary["winner"] is not None
    trials = summary["trials"]
    assert trials["segment"] == "oos" and trials["n_trials"] == 3 and 0 <= trials["deflated_sharpe_ratio"] <= 1
    assert summary["winner"]["test_metrics"]["sharpe_ratio"] == summary["winner"]["value"]


@pytest.mark.parametrize("rebalance", [5, "weekly", "monthly"])
@pytest.mark.parametrize("data", [["data=sp500", "data.start=2010-01-01"],
                                  ["data=synthetic_universe", "data.n_assets=6", "data.n_bars=1200"]])
def test_a_rules_walk_forward_returns_are_the_holdout_backtests_on_the_same_bars(rebalance, data) -> None:
    """The rebalance schedule is anchored to the whole series, not restarted at the first test bar: with fold
    boundaries off the schedule (503 + 1 gap, then 97-bar folds: neither multiples of 5 nor week or month ends)
    the stitched record's returns equal the holdout run's on those bars, bar for bar."""
    from runner.evaluation.experiment import compute, prepare
    from runner.evaluation.walk_forward import walk_forward
    from tests.test_universe_strategies import composed

    common = ["+strategy=momentum", "strategy.lookback=20", "model=none", f"backtest.rebalance={rebalance}", *data]
    holdout = compute(prepare(composed(common))).result
    prepared = prepare(composed([*common, "evaluation=walk_forward", "evaluation.folds=4", "evaluation.train_bars=503",
                                 "evaluation.test_bars=97"]))
    walk = walk_forward(prepared)
    start, stop = prepared.folds[0].test_start, prepared.folds[-1].test_end
    assert start % 5 != 0 and walk.offset >= 1
    record = walk.oos.strategy_returns[walk.offset:]
    assert len(record) == stop - start == 4 * 97
    np.testing.assert_allclose(record, holdout.strategy_returns[start:stop], rtol=0, atol=1e-15)
    assert holdout.strategy_returns[start:stop].std() > 0  # the rule trades there
    table = walk.stitched_table()
    assert len(table) == 4 * 97 and table["timestamp"].iloc[0] == prepared.book.index[start]


def test_the_final_test_is_untouched_and_later_bars_move_nothing_before_it(tmp_path: Path) -> None:
    """``evaluation.final_test_bars``: the folds, the refitted models and the stitched record end before the final
    stretch; shocking every bar of that stretch moves no weight, return or metric before it."""
    from runner.data.sources import SyntheticSeries
    from runner.evaluation.experiment import compute, prepare
    from tests.test_universe_strategies import composed

    bars = SyntheticSeries(5, 700, 0.0003, 0.01, 1).load()
    shocked = bars.copy()
    shocked.iloc[-120:, :4] *= np.linspace(1.3, 0.7, 120)[:, None]
    runs = []
    for name, frame in (("bars", bars), ("shocked", shocked)):
        frame.to_csv(tmp_path / f"{name}.csv", index_label="date")
        prepared = prepare(composed(["+strategy=momentum", "model=linear", "trainer.epochs=2", "data=csv",
                                     f"data.path={tmp_path / name}.csv", "evaluation=walk_forward",
                                     "evaluation.folds=2", "evaluation.final_test_bars=120"]))
        runs.append((prepared, compute(prepared)))
    (prepared, outcome), (_, after) = runs
    final = prepared.final_fold
    assert final.test_start == 580 and final.test_end == 700 and prepared.folds[-1].test_end <= 580
    assert final.train_end + prepared.config.evaluation["gap"] == final.test_start  # fitted like a fold, gap kept
    assert len(outcome.walk.trainings) == 3  # one model per fold, and one for the final stretch
    stitched, moved = outcome.walk.stitched_table(), after.walk.stitched_table()
    assert stitched["timestamp"].iloc[-1] < bars.index[580]
    pd.testing.assert_frame_equal(stitched, moved)
    metrics, metrics_after = outcome.result.flat_metrics(), after.result.flat_metrics()
    assert {k: v for k, v in metrics.items() if k.startswith("oos_")} == {
        k: v for k, v in metrics_after.items() if k.startswith("oos_")}
    assert metrics["final_test_num_bars"] == 120 and metrics["final_test_sharpe_ratio"] != metrics_after[
        "final_test_sharpe_ratio"]
    assert outcome.selection_value == after.selection_value
    assert len(outcome.walk.final_table()) == 120
