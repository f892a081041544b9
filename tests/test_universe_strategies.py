"""Strategies on universes: no weight uses a later bar of any asset (every strategy, the pooled model,
walk-forward), a planted cross-sectional edge and its null, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.data.loader import load_data
from runner.data.universe import align
from runner.engine.backtest import run_backtest
from strategies.inverse_volatility import InverseVolatility
from strategies.xs_momentum import XsMomentum
from tests.conftest import ROOT, data_config, run_cli, synthetic_frames
from tests.test_engine import STRATEGY_YAMLS, strategy_from_yaml
from tests.test_portfolio import DAILY, LONG_SHORT


def composed(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config.schema import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides), resolve=True)


def perturbed_after(k: int, seed: int = 7):
    frames = synthetic_frames(6, 500, seed=seed, drift_dispersion=0.0005)
    frames["A5"] = frames["A5"].iloc[30:]
    rng = np.random.default_rng(1)
    shocked = {s: f.copy() for s, f in frames.items()}
    for frame in shocked.values():
        start = frame.index.get_loc(frames["A0"].index[k])  # every asset trades at bar k
        frame.iloc[start:] *= np.exp(0.05 * rng.standard_normal((len(frame) - start, 1)))
    return align(frames, 5, "base"), align(shocked, 5, "shocked")


# every strategy of conf/strategy as the CLI builds it (long and short), and other settings of the ranking ones
UNIVERSE_STRATEGIES = [*(strategy_from_yaml(path) for path in STRATEGY_YAMLS), XsMomentum(20, 2),
                       XsMomentum(20, 2, "inverse_volatility", 10).with_rules(LONG_SHORT), InverseVolatility(20)]


@pytest.mark.parametrize("strategy", UNIVERSE_STRATEGIES, ids=repr)
def test_no_weight_uses_a_later_bar_of_any_asset(strategy) -> None:
    k = 350
    base, shocked = perturbed_after(k)
    assert not np.allclose(base.close[k:], shocked.close[k:])
    w_base, w_shocked = strategy.portfolio_weights(base), strategy.portfolio_weights(shocked)
    np.testing.assert_array_equal(w_base[:k], w_shocked[:k])
    assert not np.array_equal(w_base[k:], w_shocked[k:]) or type(strategy).__name__ in ("EqualWeight", "BuyAndHold")
    a = run_backtest(base.close, w_base, 200, 300, DAILY, base.index, symbols=base.symbols)
    b = run_backtest(shocked.close, w_shocked, 200, 300, DAILY, shocked.index, symbols=shocked.symbols)
    np.testing.assert_array_equal(a.strategy_returns[:k], b.strategy_returns[:k])
    assert a.metrics["train"] == b.metrics["train"] and a.metrics["val"] == b.metrics["val"]


@pytest.mark.parametrize("strategy", ["xs_momentum", "momentum"])
def test_the_pooled_model_uses_no_later_bar(strategy: str) -> None:
    from runner.evaluation.experiment import prepare, target_weights

    config = composed([f"+strategy={strategy}", "strategy.lookback=10", "data=synthetic_universe", "data.n_assets=6",
                       "data.n_bars=500", "model=linear", "trainer.epochs=3"])
    prepared = prepare(config)
    k = 420  # in the test segment
    base, shocked = perturbed_after(k)
    prepared.book, prepared.train_end, prepared.val_end = base, 300, 400
    w_base, training, dataset = target_weights(prepared)
    assert training is not None and dataset.features.shape[0] >= 6 * 500
    prepared.book = shocked
    w_shocked, _, _ = target_weights(prepared)
    np.testing.assert_array_equal(w_base[:k], w_shocked[:k])
    assert not np.array_equal(w_base[k:], w_shocked[k:])


def xs_test_sharpe(dispersion: float, seed: int) -> float:
    universe = load_data(data_config("synthetic_universe", seed=seed, n_assets=20, n_bars=3000, drift=0.0,
                                     drift_dispersion=dispersion))
    weights = XsMomentum(250, 4).with_rules(LONG_SHORT).portfolio_weights(universe)
    result = run_backtest(universe.close, weights, 1800, 2400, DAILY, universe.index, symbols=universe.symbols)
    return result.metrics["test"]["sharpe_ratio"]


def test_xs_momentum_finds_a_planted_cross_sectional_edge_and_nothing_in_its_absence() -> None:
    """Long-short (no market exposure to earn): persistent per-asset drifts (a spread of 0.0015 a bar) are found
    in every one of 4 universes; without them no universe of 8 shows a Sharpe above 1.5 and their mean is
    near 0 (a 600-bar test segment's Sharpe has a standard error of about 0.65; the mean of 8, about 0.23)."""
    planted = [xs_test_sharpe(0.0015, seed) for seed in range(4)]
    assert min(planted) > 1.5, planted
    null = [xs_test_sharpe(0.0, seed) for seed in range(8)]
    assert abs(np.mean(null)) < 0.6 and max(null) < 1.5, null


def test_cli_trades_the_bundled_universe_with_every_artifact(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    import mlflow

    result = run_cli(["runner", "+strategy=xs_momentum", "data=bundled_universe", "model=none",
                      "backtest.rebalance=weekly", "+backtest.asset_costs.WTI=0.002"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = mlflow.search_runs(experiment_names=["trading_experiment"], output_format="list")[0]
    assert run.data.tags["universe"] == "bundled_universe" and run.data.tags["n_assets"] == "4"
    assert json.loads(run.data.params["universe.symbols"]) == ["GOOG", "NASDAQ", "SP500", "WTI"]
    assert run.data.params["backtest.rebalance"] == "weekly"
    assert 0 < run.data.metrics["test_avg_holdings"] <= 2
    client = mlflow.MlflowClient()
    files = {a.path for folder in ("backtest", "figures") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"backtest/weights.json", "backtest/weights.parquet", "figures/weights.png", "figures/equity.png"} <= files
    assert {"tearsheet.html", "metrics"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    weights = pd.read_json(client.download_artifacts(run.info.run_id, "backtest/weights.json", str(tmp_path)),
                           orient="split")
    assert list(weights.columns) == ["timestamp", "symbol", "weight"]
    assert set(weights["symbol"]) == {"GOOG", "NASDAQ", "SP500", "WTI"}
    results = json.loads(Path(client.download_artifacts(run.info.run_id, "backtest/results.json", str(tmp_path)))
                         .read_text())
    assert set(results["contributions"]["test"]) == {"GOOG", "NASDAQ", "SP500", "WTI"}
    assert results["contributions"]["test"]["GOOG"] == 0.0  # GOOG's data ends in 2008, before test


@pytest.mark.parametrize("args,message", [
    (["+strategy=xs_momentum", "data=synthetic", "model=none"], "XsMomentum ranks assets against each other"),
    (["+strategy=equal_weight", "data=synthetic_universe", "+backtest.asset_costs.ZZZ=0.1"],
     "backtest.asset_costs names ['ZZZ'], which are not in the universe"),
    (["+strategy=equal_weight", "data=synthetic_universe", "backtest.rebalance=daily"],
     "backtest.rebalance='daily' is not valid; allowed: 1 (every bar)"),
    (["+strategy=inverse_volatility", "data=synthetic_universe", "model=mlp"],
     "InverseVolatility has no use for a model"),
])
def test_universe_mistakes_are_user_errors_without_a_run(tmp_path: Path, cli_env: dict, tracking_uri: str, args,
                                                         message: str) -> None:
    import mlflow

    result = run_cli(["runner", *args], cli_env, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_walk_forward_on_a_universe_refits_a_pooled_model_per_fold_without_look_ahead() -> None:
    from runner.evaluation.experiment import prepare
    from runner.evaluation.walk_forward import walk_forward

    config = composed(["+strategy=xs_momentum", "strategy.lookback=10", "data=synthetic_universe",
                       "data.n_assets=6", "data.n_bars=500", "model=linear", "trainer.epochs=3",
                       "evaluation=walk_forward", "evaluation.folds=3"])
    prepared = prepare(config)
    base, shocked = perturbed_after(420)
    prepared.book = base
    walk = walk_forward(prepared)
    assert len(walk.trainings) == 3 and walk.oos.symbols == base.symbols
    k = 420 - (prepared.folds[0].test_start - 1)  # bar 420 in the stitched record
    assert prepared.folds[-1].test_start <= 420 < prepared.folds[-1].test_end
    prepared.book = shocked
    moved = walk_forward(prepared)
    np.testing.assert_array_equal(walk.oos.asset_weights[:k], moved.oos.asset_weights[:k])
    np.testing.assert_array_equal(walk.oos.strategy_returns[:k], moved.oos.strategy_returns[:k])
    assert walk.fold_metrics["sharpe_ratio"][:2] == moved.fold_metrics["sharpe_ratio"][:2]
    assert not np.array_equal(walk.oos.asset_weights[k:], moved.oos.asset_weights[k:])


def test_walk_forward_with_a_rule_re_slices_the_holdout_portfolio() -> None:
    from runner.evaluation.experiment import compute, prepare
    from runner.evaluation.walk_forward import walk_forward

    common = ["+strategy=xs_momentum", "data=synthetic_universe", "data.n_bars=800", "model=none"]
    holdout = compute(prepare(composed(common))).result
    prepared = prepare(composed([*common, "evaluation=walk_forward", "evaluation.folds=4"]))
    walk = walk_forward(prepared)
    first = prepared.folds[0].test_start
    np.testing.assert_allclose(walk.oos.strategy_returns[1:], holdout.strategy_returns[first:], rtol=0, atol=1e-15)


@pytest.mark.slow
def test_the_readme_universe_example_trains_one_pooled_model(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    """``python -m runner +strategy=xs_momentum data=bundled_universe`` as the README gives it (default MLP)."""
    import mlflow

    result = run_cli(["runner", "+strategy=xs_momentum", "data=bundled_universe"], cli_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(the model was fitted on train and early-stopped on val: only test is out of sample)" in result.stdout
    run = mlflow.search_runs(experiment_names=["trading_experiment"], output_format="list")[0]
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "mlp" and "val_loss" in run.data.metrics
    client = mlflow.MlflowClient()
    files = {a.path for folder in ("backtest", "figures", "model_inputs")
             for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"backtest/weights.parquet", "figures/weights.png", "figures/training.png",
            "model_inputs/standardisation.json"} <= files
    assert mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
