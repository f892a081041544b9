"""Portfolios: the engine on bars x assets against independent loops and simulations, and universes' data and
alignment (strategies, look-ahead and the CLI on universes: tests/test_universe_strategies.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.config.schema import BacktestConf, StrategyRules
from runner.data.loader import load_data
from runner.data.universe import align
from runner.engine.backtest import run_backtest
from runner.errors import DataError
from strategies.equal_weight import EqualWeight
from strategies.momentum import Momentum
from tests.conftest import data_config, synthetic_frames

DAILY = BacktestConf(periods_per_year=252)
LONG_SHORT = StrategyRules(long_only=False)


def ragged_universe(seed: int = 3, n: int = 400, max_fill: int = 2):
    """Five assets: one lists late, one is delisted early, one has a 1-bar and a 6-bar gap."""
    frames = synthetic_frames(5, n, seed=seed, drift_dispersion=0.0005)
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
    # the first segment's too: its bar-0 entry cost is in the starting equity, not in the summed returns
    assert sum(result.contributions["train"].values()) == pytest.approx(expected[1:240].sum(), rel=1e-12)
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
    frames = synthetic_frames(4, 120, seed=5)
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


def test_a_single_series_is_the_one_column_book() -> None:
    """One engine: a series given as one column (as the runner's data boundary gives it) is backtested exactly
    as the series, and reported as that series (its close, its round trips, no per-asset tables)."""
    rng = np.random.default_rng(2)
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(300)))
    weights = Momentum(10).target_weights(pd.DataFrame({"close": close}))
    single = run_backtest(close, weights, 180, 240, DAILY)
    one = run_backtest(close[:, None], weights[:, None], 180, 240, DAILY, symbols=["X"])
    np.testing.assert_array_equal(single.strategy_returns, one.strategy_returns)
    np.testing.assert_array_equal(single.equity, one.equity)
    pd.testing.assert_frame_equal(single.portfolio_values(), one.portfolio_values())
    pd.testing.assert_frame_equal(single.trades, one.trades)
    assert len(one.trades) > 10 and one.symbols is None and one.asset_weights is None
    assert single.metrics.keys() == one.metrics.keys()
    for segment, values in single.metrics.items():
        assert values.keys() == one.metrics[segment].keys()
        assert all(one.metrics[segment][k] == v or (np.isnan(v) and np.isnan(one.metrics[segment][k]))
                   for k, v in values.items()), segment


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
    frames = {s: f for s, f in synthetic_frames(3, 60, seed=1).items()}
    frames["A1"] = frames["A1"].iloc[5:50].drop(frames["A1"].index[[20, 30, 31, 32]])  # late, gaps 1 and 3, early stop
    write_folder(tmp_path / "prices", frames)
    long = pd.concat([f.assign(Symbol=s) for s, f in frames.items()]).rename_axis("date").reset_index()
    long.sample(frac=1.0, random_state=0).to_csv(tmp_path / "long.csv", index=False)
    by_folder = load_data(data_config("universe", path=str(tmp_path / "prices"), max_fill=2))
    by_file = load_data(data_config("universe", path=str(tmp_path / "long.csv"), max_fill=2))
    assert by_folder.symbols == by_file.symbols == ["A0", "A1", "A2"]
    np.testing.assert_allclose(by_folder.close, by_file.close)
    column = by_folder.close[:, 1]
    assert np.isnan(column[:5]).all() and np.isnan(column[52:]).all()  # before it lists; 2 bars after it stops
    assert column[20] == column[19]  # a 1-bar gap is filled (return 0), tradable
    assert column[30] == column[31] == column[29] and np.isnan(column[32])  # the 3rd bar of a gap has no price
    weights = EqualWeight().portfolio_weights(by_folder)
    assert weights[32, 1] == 0 and weights[31, 1] > 0 and weights[33, 1] > 0


def test_two_files_for_one_symbol_are_refused_naming_both(tmp_path: Path) -> None:
    frames = synthetic_frames(3, 60, seed=1)
    write_folder(tmp_path / "prices", frames)
    frames["A1"].rename(columns=str.upper).rename_axis("Date").to_csv(tmp_path / "prices" / "A1.csv.gz")
    with pytest.raises(DataError, match=r"more than one file for a symbol \(A1: A1.csv, A1.csv.gz\)"):
        load_data(data_config("universe", path=str(tmp_path / "prices")))


def hourly_and_daily(tmp_path: Path) -> Path:
    """A daily asset (closes stamped at midnight) beside an hourly one, 24 bars a day, over the same 60 days."""
    days = pd.bdate_range("2020-01-01", periods=60)
    hours = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in range(24)])
    rng = np.random.default_rng(3)
    daily = pd.DataFrame({"close": 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(len(days))))}, index=days)
    hourly = pd.DataFrame({"close": 50 * np.exp(np.cumsum(0.002 * rng.standard_normal(len(hours)))),
                           "volume": 1.0}, index=hours)
    write_folder(tmp_path / "mixed", {"DAILY": daily, "HOURLY": hourly})
    return tmp_path / "mixed"


def test_daily_beside_intraday_bars_is_refused_unless_resampled(tmp_path: Path) -> None:
    folder = hourly_and_daily(tmp_path)
    with pytest.raises(DataError, match=r"mixes intraday and daily bars \(DAILY every 1 days 00:00:00, HOURLY every "
                                        r"0 days 01:00:00\).*data.resample=1D"):
        load_data(data_config("universe", path=str(folder)))
    book = load_data(data_config("universe", path=str(folder), resample="1D"))
    assert len(book.index) == 60 and np.isfinite(book.close).all()  # one bar a day for both, on one calendar
    hourly = book.frames["HOURLY"]
    source = pd.read_csv(folder / "HOURLY.csv", index_col=0, parse_dates=True)
    day = hourly.index[10]  # a day's bar: that day's last hourly close, its summed volume, nothing later
    assert hourly.loc[day, "close"] == source.loc[source.index.normalize() == day, "CLOSE"].iloc[-1]
    assert hourly.loc[day, "volume"] == 24.0
    with pytest.raises(DataError, match="data.resample='often' is not a frequency"):
        load_data(data_config("universe", path=str(folder), resample="often"))


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
    frames = synthetic_frames(3, 100, seed=1)
    frames["A1"], frames["A2"] = frames["A1"].iloc[10:], frames["A2"].iloc[25:]
    with pytest.raises(DataError, match=r"only 1 asset\(s\) \(A0\) have a price at the first bar.*"
                                        r"data.start=2000-01-17"):
        align(frames, 5, "late")
    with pytest.raises(DataError, match="data.max_fill=-1 must be an integer >= 0"):
        align(frames, -1, "late")


def test_an_asset_that_loses_its_price_between_rebalances_is_sold_and_stays_sold() -> None:
    """Monthly rebalancing; A1 has no price for 3 bars (beyond max_fill=1) in mid-month, then trades again: it is
    sold at its last price, its proceeds stay cash and it is bought back only at the next rebalance (checked
    against a share-and-cash simulation written independently)."""
    frames = synthetic_frames(3, 80, seed=9)
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
