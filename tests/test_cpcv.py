"""Combinatorial purged cross-validation: the splits against skfolio's, paths, purge and embargo, no leakage
from a test group into the models trained without it, and a run and a sweep through the real CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from runner.errors import DataError
from runner.evaluation.cpcv import PURGE, CpcvEvaluation
from tests.conftest import run_cli


@pytest.mark.parametrize("n_bars,groups,test_groups,embargo", [(1000, 6, 2, 10), (997, 5, 3, 0), (1234, 8, 2, 7),
                                                                (600, 4, 2, 3)])
def test_the_splits_and_paths_are_skfolios(n_bars, groups, test_groups, embargo) -> None:
    """skfolio's ``CombinatorialPurgedCV`` (a test-only reference) with ``purged_size`` = our 1-bar purge: the same
    training bars, test groups and path recombination, split for split."""
    from skfolio.model_selection import CombinatorialPurgedCV as Reference

    plan = CpcvEvaluation(groups, test_groups, embargo).plan(n_bars, with_model=False, min_train=0)
    reference = Reference(n_folds=groups, n_test_folds=test_groups, purged_size=PURGE, embargo_size=embargo)
    expected = list(reference.split(np.zeros((n_bars, 1))))
    assert len(plan.splits) == len(expected) == math.comb(groups, test_groups)
    assert plan.n_paths == reference.n_test_paths == math.comb(groups, test_groups) * test_groups // groups
    for split, (train, tests) in zip(plan.splits, expected, strict=True):
        np.testing.assert_array_equal(np.flatnonzero(split.train), train)
        np.testing.assert_array_equal(np.concatenate([np.arange(*plan.groups[g]) for g in split.test_groups]),
                                      np.concatenate(tests))
    np.testing.assert_array_equal(plan.paths, reference.recombined_paths)


def test_purge_and_embargo_are_visible_in_the_splits_table() -> None:
    plan = CpcvEvaluation(6, 2, 10).plan(1000, with_model=False, min_train=0)
    table = plan.splits_table()
    assert set(table.columns) == {"split", "role", "start_bar", "end_bar"} and table["split"].nunique() == 15
    for split, rows in table.groupby("split"):
        train, test = rows[rows.role == "train"], rows[rows.role == "test"]
        for t in test.itertuples():  # nothing trains within the purge before, or the purge + embargo after
            before = (train.end_bar >= t.start_bar - PURGE) & (train.start_bar <= t.end_bar)
            after = (train.start_bar <= t.end_bar + PURGE + 10) & (train.end_bar >= t.start_bar)
            assert not before.any() and not after.any(), (split, t)
        covered = sum(r.end_bar - r.start_bar + 1 for r in rows.itertuples())
        assert covered < 1000  # the purged and embargoed bars are in neither role


@pytest.mark.parametrize("changes,message", [({"groups": 2}, "groups=2 must be an integer >= 3"),
                                             ({"test_groups": 6}, "test_groups=6 must be below"),
                                             ({"embargo_bars": -1}, "embargo_bars=-1"),
                                             ({"embargo_bars": 200}, "cpcv does not fit the data: 1000 bars")])
def test_settings_that_do_not_fit_are_named(changes, message) -> None:
    settings = {"groups": 6, "test_groups": 2, "embargo_bars": 10, **changes}
    with pytest.raises(DataError, match=message):
        CpcvEvaluation(**settings).plan(1000, with_model=True, min_train=30)


def _composed(extra: list[str]) -> dict:
    from tests.test_universe_strategies import composed

    return composed(["+strategy=momentum", "strategy.lookback=5", "data=synthetic", "data.n_bars=900",
                     "evaluation=cpcv", "evaluation.groups=6", "evaluation.test_groups=2", "evaluation.embargo_bars=10",
                     *extra])


def test_a_rule_has_fifteen_splits_and_five_identical_paths() -> None:
    from runner.evaluation.experiment import compute, prepare

    outcome = compute(prepare(_composed(["model=none"])))
    paths = outcome.cpcv
    assert len(paths.plan.splits) == 15 and paths.plan.n_paths == 5 and outcome.training is None
    assert paths.distribution["cpcv_sharpe_ratio_std"] == 0.0 and len(set(paths.path_metrics["sharpe_ratio"])) == 1
    assert outcome.selection_value == paths.distribution["cpcv_sharpe_ratio_mean"]
    assert math.isnan(paths.distribution["cpcv_pbo"])  # one backtest five times: nothing to overfit between


def test_a_test_groups_bars_move_no_model_trained_without_it(tmp_path: Path) -> None:
    """Shock every bar of group 2: each split that tests group 2 (so trained without it, its purge and embargo)
    forecasts every bar whose inputs do not read group 2's prices exactly as before; the paths differ."""
    from runner.data.sources import SyntheticSeries
    from runner.evaluation.cpcv import split_forecasts
    from runner.evaluation.experiment import prepare

    bars = SyntheticSeries(5, 900, 0.0003, 0.01, 1).load()
    shocked = bars.copy()
    forecasts, plans = [], []
    for name, frame in (("bars", bars), ("shocked", shocked)):
        if name == "shocked":
            start, stop = plans[0].groups[2]
            frame.iloc[start:stop, :4] *= np.linspace(1.25, 0.8, stop - start)[:, None]
        frame.to_csv(tmp_path / f"{name}.csv", index_label="date")
        overrides = ["+strategy=momentum", "strategy.lookback=5", "model=linear", "trainer.epochs=2", "data=csv",
                     f"data.path={tmp_path / name}.csv", "evaluation=cpcv", "evaluation.groups=6",
                     "evaluation.test_groups=2", "evaluation.embargo_bars=10"]
        from tests.test_universe_strategies import composed

        prepared = prepare(composed(overrides))
        plans.append(prepared.cpcv)
        forecasts.append(split_forecasts(prepared, prepared.cpcv, lambda: None)[0])
    plan = plans[0]
    start, stop = plan.groups[2]
    reach = 10  # the momentum rule's features look back 5 bars: 10 is beyond their reach
    readable = np.ones(900, dtype=bool)
    readable[start:stop + reach] = False
    without = [s.number for s in plan.splits if 2 in s.test_groups]
    assert len(without) == 5
    for number in without:
        np.testing.assert_array_equal(forecasts[0][number][readable], forecasts[1][number][readable])
    trained_on_it = [s.number for s in plan.splits if 2 not in s.test_groups]
    assert any(not np.allclose(forecasts[0][n], forecasts[1][n]) for n in trained_on_it)  # the shock mattered


@pytest.mark.slow
def test_a_cpcv_run_and_sweep_through_the_cli(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    common = ["+strategy=momentum", "model=linear", "trainer.epochs=2", "data=synthetic", "data.n_bars=900",
              "evaluation=cpcv", "evaluation.groups=6", "evaluation.test_groups=2", "evaluation.embargo_bars=10"]
    done = run_cli(["runner", *common], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[split 15/15] trained" in done.stderr and "5 out-of-sample paths" in done.stdout
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    assert run.info.run_name == "momentum-linear-synthetic cpcv"  # the evaluation is in the name unless holdout
    metrics = run.data.metrics
    assert metrics["cpcv_n_splits"] == 15 and metrics["cpcv_n_paths"] == 5 and 0 <= metrics["cpcv_pbo"] <= 1
    history = client.get_metric_history(run.info.run_id, "path_sharpe_ratio")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4] and len({m.value for m in history}) > 1
    assert metrics["cpcv_sharpe_ratio_p05"] <= metrics["cpcv_sharpe_ratio_p50"] <= metrics["cpcv_sharpe_ratio_p95"]
    assert metrics["cpcv_sharpe_ratio_mean"] == pytest.approx(np.mean([m.value for m in history]))
    splits = pd.read_parquet(client.download_artifacts(run.info.run_id, "backtest/cpcv_splits.parquet", str(tmp_path)))
    paths = pd.read_parquet(client.download_artifacts(run.info.run_id, "backtest/cpcv_paths.parquet", str(tmp_path)))
    assert {"timestamp", "path", "strategy_return", "equity"} <= set(paths.columns) and len(paths) == 5 * 900
    for _, rows in splits.groupby("split"):
        train, test = rows[rows.role == "train"], rows[rows.role == "test"]
        for t in test.itertuples():
            assert not ((train.start_bar <= t.end_bar + PURGE + 10) & (train.end_bar >= t.start_bar - PURGE)).any()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/cpcv.png", "figures/training.png"} <= artifacts
    # a sweep selects on the paths' mean Sharpe and judges its winner on them
    sweep = run_cli(["runner", "-m", "+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=900",
                     "evaluation=cpcv", "strategy.lookback=5,20", "sweep_name=cp"], cli_env, tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    summary = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    assert summary["metric"] == "cpcv_sharpe_ratio_mean" and summary["trials"]["segment"] == "cpcv"
    assert summary["trials"]["n_trials"] == 2 and 0 <= summary["trials"]["deflated_sharpe_ratio"] <= 1
    assert "no untouched test" in sweep.stdout
