"""Portfolios: the engine on bars x assets against independent loops, universes' alignment, look-ahead for every
universe strategy and the pooled model, a planted cross-sectional edge and its null, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.config import BacktestConf, StrategyRules
from runner.data import DataError
from runner.engine.backtest import run_backtest
from runner.universe import align, load_universe, synthetic_universe
from strategies.equal_weight import EqualWeight
from strategies.inverse_volatility import InverseVolatility
from strategies.momentum import Momentum
from strategies.xs_momentum import XsMomentum
from tests.conftest import ROOT, run_cli
from tests.test_engine import STRATEGY_YAMLS, strategy_from_yaml

DAILY = BacktestConf(periods_per_year=252)
LONG_SHORT = StrategyRules(long_only=False)


def ragged_universe(seed: int = 3, n: int = 400, max_fill: int = 2):
    """Five assets: one lists late, one is delisted early, one has a 1-bar and a 6-bar gap."""
    frames = synthetic_universe(5, n, seed=seed, drift_dispersion=0.0005)
    frames["A1"] = frames["A1"].iloc[40:]
    frames["A2"] = frames["A2"].iloc[:300]
    frames["A3"] = frames["A3"].drop(frames["A3"].index[[100, *range(200, 206)]])
    return align(frames, max_fill, "ragged")


def reference_returns(close: np.ndarray, weights: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """DESIGN's formula bar by bar in plain Python: s[t] = sum_i w[t-1,i] r[t,i] - sum_i c_i |w[t,i] - w[t-1,i]|,
    an asset without a price holding nothing and returning nothing."""
    n, m = close.shape
    s = [math.nan]
    for t in range(1, n):
        total = 0.0
        for i in range(m):
            w_now = weights[t, i] if math.isfinite(close[t, i]) else 0.0
            w_before = weights[t - 1, i] if math.isfinite(close[t - 1, i]) else 0.0
            if math.isfinite(close[t, i]) and math.isfinite(close[t - 1, i]):
                total += w_before * (close[t, i] / close[t - 1, i] - 1.0)
            total -= costs[i] * abs(w_now - w_before)
        s.append(total)
    return np.array(s)


def test_equal_weight_daily_matches_an_independent_computation_per_bar() -> None:
    universe = ragged_universe()
    weights = EqualWeight().portfolio_weights(universe)
    tradable = universe.tradable()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)  # 1/N_t over the assets priced at t
    assert (weights[~tradable] == 0).all() and (weights[:40, 1] == 0).all() and (weights[302:, 2] == 0).all()
    config = BacktestConf(periods_per_year=252, commission=0.001, asset_costs={"A4": 0.004})
    result = run_backtest(universe.close, weights, 240, 320, config, universe.index, symbols=universe.symbols)
    costs = np.array([0.001, 0.001, 0.001, 0.001, 0.004])
    expected = reference_returns(universe.close, weights, costs)
    np.testing.assert_allclose(result.strategy_returns[1:], expected[1:], rtol=0, atol=1e-15)
    entry = sum(costs[i] * abs(weights[0, i]) for i in range(5))
    equity = 100_000 * (1 - entry) * np.cumprod(np.r_[1.0, 1.0 + expected[1:240]])
    np.testing.assert_allclose(result.equity[:240], equity, rtol=1e-12)
    test = expected[320:]
    sharpe = np.mean(test) / np.std(test, ddof=1) * math.sqrt(252)
    assert result.metrics["test"]["sharpe_ratio"] == pytest.approx(sharpe, rel=1e-12)
    assert result.metrics["test"]["total_return"] == pytest.approx(np.prod(1 + test) - 1, rel=1e-12)
    # per-asset contributions add up to the per-bar returns of the segment
    assert sum(result.contributions["test"].values()) == pytest.approx(test.sum(), rel=1e-12)
    assert result.metrics["test"]["avg_holdings"] == pytest.approx(tradable[320:].sum() / 80)


def test_gross_leverage_is_scaled_not_clipped() -> None:
    close = np.full((3, 3), 100.0)
    weights = np.array([[0.8, 0.8, -0.4], [0.5, 0.2, 0.0], [0.0, 0.0, 0.0]])
    result = run_backtest(close, weights, 3, 3, BacktestConf(max_leverage=1.0, periods_per_year=252),
                          symbols=["A", "B", "C"])
    np.testing.assert_allclose(result.asset_weights, [[0.4, 0.4, -0.2], [0.5, 0.2, 0.0], [0, 0, 0]])
    np.testing.assert_allclose(result.weights, [1.0, 0.7, 0.0])  # the per-bar table's gross exposure


def share_simulation(close: np.ndarray, targets: np.ndarray, rebalance_bars: set[int]) -> np.ndarray:
    """Equity of a book that buys shares at rebalance bars only (no costs), written independently."""
    cash, shares, equity = 1.0, np.zeros(close.shape[1]), []
    for t in range(len(close)):
        value = cash + shares @ close[t]
        if t in rebalance_bars:
            shares = targets[t] * value / close[t]
            cash = value - shares @ close[t]
        equity.append(cash + shares @ close[t])
    return np.array(equity)


@pytest.mark.parametrize("rebalance", [5, "monthly", "weekly"])
def test_between_rebalances_weights_drift_and_only_rebalances_trade(rebalance) -> None:
    frames = synthetic_universe(4, 120, seed=5)
    universe = align(frames, 0, "four")
    rng = np.random.default_rng(0)
    targets = rng.dirichlet(np.ones(4), size=120) * 0.9  # 10% cash
    targets[:, 3] *= -1  # one short
    no_cost = BacktestConf(commission=0.0, periods_per_year=252, rebalance=rebalance)
    result = run_backtest(universe.close, targets, 120, 120, no_cost, universe.index, symbols=universe.symbols)
    from runner.engine.portfolio import rebalance_mask

    mask = rebalance_mask(rebalance, universe.index, 120)
    equity = share_simulation(universe.close, targets, set(np.flatnonzero(mask)))
    np.testing.assert_allclose(result.equity / 100_000, equity, rtol=1e-12)
    held = result.asset_weights
    np.testing.assert_allclose(held[mask], targets[mask], rtol=1e-12)
    assert not np.allclose(held[~mask], targets[~mask])  # between rebalances the weights moved with prices
    traded = set(result.fills["bar"])
    assert traded == set(np.flatnonzero(mask))
    paid = run_backtest(universe.close, targets, 120, 120, BacktestConf(commission=0.001, periods_per_year=252,
                        rebalance=rebalance), universe.index, symbols=universe.symbols)
    # a rebalance trades from the drifted weights to the targets, and only there
    bars = np.flatnonzero(mask)[1:]
    before, r = paid.asset_weights[bars - 1], universe.close[bars] / universe.close[bars - 1] - 1
    drifted = before * (1 + r) / (1 + (before * r).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(paid.fills.groupby("bar")["cost"].sum().to_numpy()[1:],
                               0.001 * np.abs(targets[bars] - drifted).sum(axis=1), rtol=1e-9)


def test_a_single_series_is_a_universe_of_one() -> None:
    """The same arithmetic with one column: returns, equity and every metric agree; a universe's trades are
    per-asset unit trades (price in, price out, costs at both ends), a series' compound its weighted returns,
    so for long positions their returns differ only by about c*|r| at the exit bar (5e-4 x a few % here)."""
    rng = np.random.default_rng(2)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(300)))
    weights = Momentum(10).target_weights(pd.DataFrame({"close": close}))
    single = run_backtest(close, weights, 180, 240, DAILY)
    one = run_backtest(close[:, None], weights[:, None], 180, 240, DAILY, symbols=["X"])
    np.testing.assert_array_equal(single.strategy_returns, one.strategy_returns)
    np.testing.assert_array_equal(single.equity, one.equity)
    assert len(single.trades) == len(one.trades) > 10
    np.testing.assert_array_equal(single.trades["exit_bar"], one.trades["exit_bar"])
    np.testing.assert_allclose(single.trades["return"], one.trades["return"], rtol=0, atol=3e-5)
    for segment, values in single.metrics.items():
        assert set(one.metrics[segment]) - set(values) == {"avg_holdings"}
        for key, value in values.items():
            tolerance = 1e-3 if key in ("win_rate", "profit_factor", "expectancy") else 1e-12
            assert one.metrics[segment][key] == pytest.approx(value, rel=tolerance, abs=tolerance, nan_ok=True), key


def loop_round_trips(weights: np.ndarray, price: np.ndarray, cost: float) -> list[tuple]:
    """Each asset's runs of one side, walked bar by bar: (asset, entry, exit, open, return)."""
    out = []
    for i in range(weights.shape[1]):
        entry = None
        for t in range(len(weights) + 1):
            now = np.sign(weights[t, i]) if t < len(weights) else 0.0
            before = np.sign(weights[t - 1, i]) if t > 0 else 0.0
            if now != before and before != 0:
                is_open = t == len(weights)
                exit_bar = t - 1 if is_open else t
                move = price[exit_bar, i] / price[entry, i]
                gross = move if before > 0 else 2 - move
                out.append((i, entry, exit_bar, is_open, (1 - cost) * gross * (1 if is_open else 1 - cost) - 1))
            if now != before and now != 0:
                entry = t
    return sorted(out)


def test_round_trips_of_a_universe_match_a_bar_by_bar_walk() -> None:
    rng = np.random.default_rng(4)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((200, 6)), axis=0))
    weights = rng.choice([-0.2, 0.0, 0.1, 0.3], size=(200, 6), p=[0.2, 0.4, 0.2, 0.2])
    weights[:, 2] = 0.0  # never traded
    weights[150:, 3] = 0.1  # open at the end
    result = run_backtest(close, weights, 200, 200, DAILY, symbols=list("ABCDEF"))
    trades = result.trades
    assets = ["ABCDEF".index(symbol) for symbol in trades["symbol"]]
    got = sorted(zip(assets, trades["entry_bar"], trades["exit_bar"], trades["is_open"], trades["return"],
                     strict=True))
    expected = loop_round_trips(weights, close, 0.0005)
    assert len(got) == len(expected) > 100
    for mine, theirs in zip(got, expected, strict=True):
        assert mine[:4] == theirs[:4]
        assert mine[4] == pytest.approx(theirs[4], rel=1e-12)
    assert trades[trades["symbol"] == "D"]["is_open"].iloc[-1]


def write_folder(folder: Path, frames: dict[str, pd.DataFrame]) -> None:
    folder.mkdir()
    for symbol, frame in frames.items():
        frame.rename(columns=str.upper).rename_axis("Date").to_csv(folder / f"{symbol}.csv")


def test_a_folder_and_a_long_file_give_the_same_aligned_universe(tmp_path: Path) -> None:
    frames = {s: f for s, f in synthetic_universe(3, 60, seed=1).items()}
    frames["A1"] = frames["A1"].iloc[5:50].drop(frames["A1"].index[[20, 30, 31, 32]])  # late, gaps 1 and 3, early stop
    write_folder(tmp_path / "prices", frames)
    long = pd.concat([f.assign(Symbol=s) for s, f in frames.items()]).rename_axis("date").reset_index()
    long.sample(frac=1.0, random_state=0).to_csv(tmp_path / "long.csv", index=False)
    by_folder = load_universe({"source": "universe", "path": str(tmp_path / "prices"), "max_fill": 2})
    by_file = load_universe({"source": "universe", "path": str(tmp_path / "long.csv"), "max_fill": 2})
    assert by_folder.symbols == by_file.symbols == ["A0", "A1", "A2"]
    np.testing.assert_allclose(by_folder.close, by_file.close)
    column = by_folder.close[:, 1]
    assert np.isnan(column[:5]).all() and np.isnan(column[52:]).all()  # before it lists; 2 bars after it stops
    assert column[20] == column[19]  # a 1-bar gap is filled (return 0), tradable
    assert column[30] == column[31] == column[29] and np.isnan(column[32])  # the 3rd bar of a gap has no price
    weights = EqualWeight().portfolio_weights(by_folder)
    assert weights[32, 1] == 0 and weights[31, 1] > 0 and weights[33, 1] > 0


def test_a_position_whose_asset_stops_trading_is_closed_at_its_last_price() -> None:
    universe = ragged_universe()
    weights = np.zeros(universe.close.shape)
    weights[:, 2] = 0.5  # A2 stops after bar 299
    result = run_backtest(universe.close, weights, 400, 400, DAILY, universe.index, symbols=universe.symbols)
    sale = result.fills[(result.fills["symbol"] == "A2") & (result.fills["weight_after"] == 0)]
    # carried max_fill=2 bars (it might trade again), then sold at its last price
    assert sale["bar"].tolist() == [302] and sale["price"].iloc[0] == universe.close[299, 2]
    trade = result.trades[result.trades["symbol"] == "A2"].iloc[0]
    assert not trade["is_open"] and trade["exit_bar"] == 302
    own = universe.close[299, 2] / universe.close[0, 2]
    assert trade["return"] == pytest.approx(own * (1 - 0.0005) ** 2 - 1, rel=1e-9)


def test_fewer_than_two_assets_at_the_first_bar_is_refused_with_the_date_to_start() -> None:
    frames = synthetic_universe(3, 100, seed=1)
    frames["A1"], frames["A2"] = frames["A1"].iloc[10:], frames["A2"].iloc[25:]
    with pytest.raises(DataError, match=r"only 1 asset\(s\) \(A0\) have a price at the first bar.*"
                                        r"data.start=2000-01-17"):
        align(frames, 5, "late")
    with pytest.raises(DataError, match="data.max_fill=-1 must be an integer >= 0"):
        align(frames, -1, "late")


def perturbed_after(k: int, seed: int = 7):
    frames = synthetic_universe(6, 500, seed=seed, drift_dispersion=0.0005)
    frames["A5"] = frames["A5"].iloc[30:]
    rng = np.random.default_rng(1)
    shocked = {s: f.copy() for s, f in frames.items()}
    for frame in shocked.values():
        frame.iloc[frame.index.get_indexer([frames["A0"].index[k]])[0]:] *= np.exp(
            0.05 * rng.standard_normal((len(frame) - frame.index.get_indexer([frames["A0"].index[k]])[0], 1)))
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
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config import register
    from runner.experiment import prepare, universe_weights

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = OmegaConf.to_container(compose("config", [f"+strategy={strategy}", "strategy.lookback=10",
                                                           "data=synthetic_universe", "data.n_assets=6",
                                                           "data.n_bars=500", "model=linear", "trainer.epochs=3"]),
                                        resolve=True)
    prepared = prepare(config)
    k = 420  # in the test segment
    base, shocked = perturbed_after(k)
    prepared.universe, prepared.train_end, prepared.val_end = base, 300, 400
    w_base, training, dataset = universe_weights(prepared)
    assert training is not None and dataset.features.shape[0] >= 6 * 500
    prepared.universe = shocked
    w_shocked, _, _ = universe_weights(prepared)
    np.testing.assert_array_equal(w_base[:k], w_shocked[:k])
    assert not np.array_equal(w_base[k:], w_shocked[k:])


def xs_test_sharpe(dispersion: float, seed: int) -> float:
    universe = load_universe({"source": "synthetic_universe", "n_assets": 20, "n_bars": 3000, "drift": 0.0,
                              "drift_dispersion": dispersion, "seed": seed})
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


def composed(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides), resolve=True)


def test_walk_forward_on_a_universe_refits_a_pooled_model_per_fold_without_look_ahead() -> None:
    from runner.evaluation import walk_forward
    from runner.experiment import prepare

    config = composed(["+strategy=xs_momentum", "strategy.lookback=10", "data=synthetic_universe",
                       "data.n_assets=6", "data.n_bars=500", "model=linear", "trainer.epochs=3",
                       "evaluation=walk_forward", "evaluation.folds=3"])
    prepared = prepare(config)
    base, shocked = perturbed_after(420)
    prepared.universe = base
    walk = walk_forward(prepared)
    assert len(walk.trainings) == 3 and walk.oos.symbols == base.symbols
    k = 420 - (prepared.folds[0].test_start - 1)  # bar 420 in the stitched record
    assert prepared.folds[-1].test_start <= 420 < prepared.folds[-1].test_end
    prepared.universe = shocked
    moved = walk_forward(prepared)
    np.testing.assert_array_equal(walk.oos.asset_weights[:k], moved.oos.asset_weights[:k])
    np.testing.assert_array_equal(walk.oos.strategy_returns[:k], moved.oos.strategy_returns[:k])
    assert walk.fold_metrics["sharpe_ratio"][:2] == moved.fold_metrics["sharpe_ratio"][:2]
    assert not np.array_equal(walk.oos.asset_weights[k:], moved.oos.asset_weights[k:])


def test_walk_forward_with_a_rule_re_slices_the_holdout_portfolio() -> None:
    from runner.evaluation import walk_forward
    from runner.experiment import execute, prepare

    common = ["+strategy=xs_momentum", "data=synthetic_universe", "data.n_bars=800", "model=none"]
    holdout = execute(prepare(composed(common))).result
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


def test_an_asset_that_loses_its_price_between_rebalances_is_sold_and_stays_sold() -> None:
    """Monthly rebalancing; A1 has no price for 3 bars (beyond max_fill=1) in mid-month, then trades again: it is
    sold at its last price, its proceeds stay cash and it is bought back only at the next rebalance (checked
    against a share-and-cash simulation written independently)."""
    frames = synthetic_universe(3, 80, seed=9)
    gap = frames["A1"].index[[30, 31, 32]]
    frames["A1"] = frames["A1"].drop(gap)
    universe = align(frames, 1, "gap")
    targets = np.full((80, 3), 0.3)
    config = BacktestConf(commission=0.0, periods_per_year=252, rebalance="monthly")
    result = run_backtest(universe.close, targets, 80, 80, config, universe.index, symbols=universe.symbols)
    from runner.engine.portfolio import rebalance_mask

    rebalances = set(np.flatnonzero(rebalance_mask("monthly", universe.index, 80)))
    cash, shares, equity = 1.0, np.zeros(3), []
    last_price = universe.close[0].copy()
    for t in range(80):
        priced = np.isfinite(universe.close[t])
        last_price = np.where(priced, universe.close[t], last_price)
        for i in np.flatnonzero(~priced & (shares != 0)):  # no price: sold at the last one
            cash, shares[i] = cash + shares[i] * last_price[i], 0.0
        value = cash + shares @ last_price
        if t in rebalances:
            shares = np.where(priced, targets[t] * value / last_price, 0.0)
            cash = value - shares @ last_price
        equity.append(cash + shares @ last_price)
    np.testing.assert_allclose(result.equity / 100_000, equity, rtol=1e-12)
    next_rebalance = min(b for b in rebalances if b > 32)
    assert 33 < next_rebalance and (result.asset_weights[32:next_rebalance, 1] == 0).all()
    assert result.asset_weights[next_rebalance, 1] == pytest.approx(0.3)
