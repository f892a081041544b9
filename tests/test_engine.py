"""The backtest engine and its metrics: pinned by hand, against a naive loop, and for look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from runner.config.schema import BacktestConf, StrategyRules
from runner.engine.backtest import run_backtest
from strategies.buy_and_hold import BuyAndHold
from strategies.mean_reversion import MeanReversion
from strategies.momentum import Momentum
from strategies.sma_crossover import SmaCrossover
from tests.conftest import ROOT

DAILY = BacktestConf(periods_per_year=252)
NO_COST = BacktestConf(commission=0.0, periods_per_year=252)


def test_metrics_pinned_on_a_hand_checkable_series() -> None:
    close = np.array([100.0, 110.0, 99.0, 99.0, 108.9])
    weights = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    result = run_backtest(close, weights, 5, 5, NO_COST)
    m = result.metrics["train"]
    # r = [nan, .1, -.1, 0, .1]; s[t] = w[t-1]*r[t] = [nan, .1, -.1, 0*0, 1*.1] = [., .1, -.1, 0, .1]
    np.testing.assert_allclose(result.strategy_returns[1:], [0.1, -0.1, 0.0, 0.1])
    # equity from 100k: 100k, 110k, 99k, 99k, 108.9k
    np.testing.assert_allclose(result.equity, [100_000, 110_000, 99_000, 99_000, 108_900])
    assert m["total_return"] == pytest.approx(0.089)
    assert m["cagr"] == pytest.approx(1.089 ** (252 / 4) - 1)  # 4 return periods
    # mean .025; deviations .075, -.125, -.025, .075 -> sum sq .0275 / 3 -> std .0957427
    std = math.sqrt(0.0275 / 3)
    assert m["annual_volatility"] == pytest.approx(std * math.sqrt(252))
    assert m["sharpe_ratio"] == pytest.approx(0.025 / std * math.sqrt(252))  # = 4.1451
    # downside: sqrt(mean([0, .01, 0, 0])) = .05 -> .025/.05*sqrt(252)
    assert m["sortino_ratio"] == pytest.approx(0.5 * math.sqrt(252))
    # peak 110k, trough 99k -> 10%; bars 2, 3, 4 are below the peak
    assert m["max_drawdown"] == pytest.approx(0.1)
    assert m["max_drawdown_duration"] == 3
    assert m["calmar_ratio"] == pytest.approx((1.089 ** 63 - 1) / 0.1)
    assert m["exposure"] == pytest.approx(0.8)  # 4 of 5 bars hold a position
    assert m["turnover"] == pytest.approx(0.6 * 252)  # |dw| = 1, 0, 1, 1, 0
    # trade 1: bars 0..2, (1.1)(0.9) - 1 = -0.01, closed; trade 2 opened at bar 3 is still open
    assert m["num_trades"] == 1
    assert m["win_rate"] == 0.0
    assert m["profit_factor"] == 0.0  # no winners, one loser
    assert m["expectancy"] == pytest.approx(-0.01)
    assert m["benchmark_total_return"] == pytest.approx(0.089)
    assert m["excess_return"] == pytest.approx(0.0)
    # population moments of s: m2 = .0275/4, m3 = -.00028125, m4 = 7.6953125e-5 -> skew, plain kurtosis
    assert m["skew"] == pytest.approx(-0.00028125 / (0.0275 / 4) ** 1.5)  # -0.4934
    assert m["kurtosis"] == pytest.approx(7.6953125e-5 / (0.0275 / 4) ** 2)  # 1.6281
    sr = 0.025 / std  # per bar
    se = math.sqrt((1 - m["skew"] * sr + (m["kurtosis"] - 1) / 4 * sr**2) / 3)
    assert m["sharpe_se"] == pytest.approx(se)
    assert m["psr"] == pytest.approx(0.5 * (1 + math.erf(sr / se / math.sqrt(2))))
    # always in the market but at bar 2's (flat) bar: s == b, so beta 1, alpha 0, no tracking error (IR undefined)
    assert m["beta"] == pytest.approx(1.0) and m["alpha"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(m["information_ratio"])
    # sorted s = [-.1, 0, .1, .1]: the 5% quantile sits 0.15 of the way from -.1 to 0; CVaR: the worst int(3*.05)+1
    assert m["value_at_risk"] == pytest.approx(-0.085) and m["conditional_value_at_risk"] == pytest.approx(-0.1)
    trades = result.trades
    assert list(trades["is_open"]) == [False, True]
    assert trades["return"].tolist() == pytest.approx([-0.01, 0.1])
    assert trades["bars_held"].tolist() == [2, 1]


def test_costs_are_paid_on_each_weight_change() -> None:
    close = np.array([100.0, 110.0, 99.0, 99.0, 108.9])
    weights = np.array([1.0, 1.0, 0.0, -1.0, -1.0])
    result = run_backtest(close, weights, 5, 5, BacktestConf(commission=0.001, slippage=0.001, periods_per_year=252))
    # s1 = .1 ; s2 = -.1 - .002*1 ; s3 = 0 - .002*1 ; s4 = -1*.1 - 0
    np.testing.assert_allclose(result.strategy_returns[1:], [0.1, -0.102, -0.002, -0.1])
    assert list(result.fills["side"]) == ["buy", "sell", "sell"]
    np.testing.assert_allclose(result.fills["cost"], [0.002, 0.002, 0.002])
    # the position taken at bar 0 pays its entry cost too: equity starts at 100k * (1 - .002)
    np.testing.assert_allclose(result.equity, 100_000 * 0.998 * np.cumprod([1, 1.1, 0.898, 0.998, 0.9]))
    assert result.metrics["train"]["total_return"] == pytest.approx(0.998 * 1.1 * 0.898 * 0.998 * 0.9 - 1)
    assert result.metrics["train"]["max_drawdown"] == pytest.approx(1 - 0.898 * 0.998 * 0.9)  # from the 1.1 peak
    assert result.trades["return"].iloc[0] == pytest.approx(0.998 * 1.1 * 0.898 - 1)  # entry and exit costs


def naive_backtest(close, weights, bounds, cost, capital):
    """A deliberately plain per-bar loop: returns, then equity restarting at each segment."""
    n = len(close)
    returns = [float("nan")] * n
    for t in range(1, n):
        prev = weights[t - 1]
        returns[t] = prev * (close[t] / close[t - 1] - 1) - cost * abs(weights[t] - prev)
    equity = [0.0] * n
    for start, stop in bounds:
        value = capital * (1 - cost * abs(weights[0])) if start == 0 else capital  # the bar-0 entry pays too
        for t in range(start, stop):
            if t > 0:
                value = value * (1 + returns[t])
            equity[t] = value
    return returns, equity


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_matches_a_naive_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 1500
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    weights = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=n)
    config = BacktestConf(commission=0.0007, slippage=0.0003, periods_per_year=252)
    result = run_backtest(close, weights, 900, 1200, config)
    returns, equity = naive_backtest(close, weights, [(0, 900), (900, 1200), (1200, n)], 0.001, 100_000.0)
    np.testing.assert_allclose(result.strategy_returns[1:], returns[1:], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.equity, equity, rtol=1e-10)
    for name, (start, stop) in result.bounds.items():
        seg = np.array(returns[max(start, 1):stop])
        assert result.metrics[name]["sharpe_ratio"] == pytest.approx(seg.mean() / seg.std(ddof=1) * math.sqrt(252))
        entry = 1 - 0.001 * abs(weights[0]) if start == 0 else 1.0
        assert result.metrics[name]["total_return"] == pytest.approx(entry * np.prod(1 + seg) - 1)


def test_trade_returns_compound_to_the_equity_curve() -> None:
    """With flips and costs, trade returns multiply out to the whole curve's growth."""
    rng = np.random.default_rng(5)
    n = 800
    close = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
    weights = np.repeat(rng.choice([-1.0, 0.0, 1.0], size=n // 20), 20)
    weights[-1] = 0.0  # close everything on the last bar
    result = run_backtest(close, weights, n, n, BacktestConf(commission=0.001, periods_per_year=252))
    assert not result.trades["is_open"].any()
    growth = np.prod(1 + result.trades["return"].to_numpy())
    assert growth == pytest.approx(result.equity[-1] / 100_000, rel=1e-10)


LONG_SHORT = StrategyRules(long_only=False)
STRATEGY_YAMLS = sorted((ROOT / "conf" / "strategy").glob("*.yaml"))


def bars_of(close: np.ndarray, rng: np.random.Generator | None = None) -> pd.DataFrame:
    """OHLCV bars around ``close`` (a close-only frame is enough for most rules, but signals take bars)."""
    rng = rng or np.random.default_rng(0)
    spread = np.abs(rng.standard_normal(len(close))) * 0.005 * close
    return pd.DataFrame({"open": close, "high": close + spread, "low": close - spread, "close": close,
                         "volume": rng.integers(1_000, 5_000, len(close)).astype(float)},
                        index=pd.bdate_range("2010-01-01", periods=len(close)))


def strategy_from_yaml(path) -> object:
    """The strategy a conf/strategy YAML builds, long and short (as the CLI builds it)."""
    import yaml

    from runner.evaluation.experiment import build_strategy

    keys = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}  # Hydra's, not the class's
    return build_strategy({**keys, "long_only": False})


@pytest.mark.parametrize("path", STRATEGY_YAMLS, ids=lambda p: p.stem)
def test_no_bar_uses_a_later_bar(path) -> None:
    """Every strategy in conf/strategy: perturbing every column of the bars after k moves no weight,
    feature, return or metric before k."""
    strategy = strategy_from_yaml(path)
    rng = np.random.default_rng(11)
    bars = bars_of(100 * np.exp(np.cumsum(0.01 * rng.standard_normal(600))), rng)
    if strategy.cross_sectional:  # ranks assets: refuses a single series (tests/test_universe_strategies.py covers it)
        with pytest.raises(ValueError, match="needs a universe"):
            strategy.target_weights(bars)
        return
    k = 400
    perturbed = bars.copy()
    perturbed.iloc[k:] *= np.exp(0.05 * rng.standard_normal((600 - k, 1)))
    base_w, pert_w = strategy.target_weights(bars), strategy.target_weights(perturbed)
    np.testing.assert_array_equal(base_w[:k], pert_w[:k])
    assert not np.array_equal(bars["close"].to_numpy()[k:], perturbed["close"].to_numpy()[k:])
    base = run_backtest(bars["close"].to_numpy(), base_w, 300, 350, DAILY)
    pert = run_backtest(perturbed["close"].to_numpy(), pert_w, 300, 350, DAILY)
    np.testing.assert_array_equal(base.strategy_returns[:k], pert.strategy_returns[:k])
    assert base.metrics["train"] == pert.metrics["train"]
    assert base.metrics["val"] == pert.metrics["val"]
    np.testing.assert_array_equal(strategy.features(bars).to_numpy()[:k], strategy.features(perturbed).to_numpy()[:k])


def test_edge_cases() -> None:
    close = np.linspace(100, 120, 50)
    flat = run_backtest(close, np.zeros(50), 50, 50, DAILY).metrics["train"]
    assert flat["num_trades"] == 0 and math.isnan(flat["win_rate"]) and math.isnan(flat["sharpe_ratio"])
    assert flat["exposure"] == 0 and flat["total_return"] == 0
    constant = run_backtest(np.full(50, 100.0), np.ones(50), 50, 50, NO_COST).metrics["train"]
    assert math.isnan(constant["sharpe_ratio"]) and math.isnan(constant["benchmark_sharpe_ratio"])
    assert math.isnan(constant["calmar_ratio"]) and constant["max_drawdown"] == 0
    one_open = run_backtest(close, np.r_[np.zeros(10), np.ones(40)], 50, 50, DAILY)
    assert len(one_open.trades) == 1 and bool(one_open.trades["is_open"].iloc[0])
    assert one_open.metrics["train"]["num_trades"] == 0


@pytest.mark.parametrize("strategy_cls,kwargs", [(Momentum, {"lookback": 5}),
                                                  (SmaCrossover, {"fast": 3, "slow": 8}),
                                                  (MeanReversion, {"window": 10, "entry_z": 1.0, "exit_z": 0.0})])
def test_long_only_both_ways(strategy_cls, kwargs) -> None:
    rng = np.random.default_rng(3)
    bars = bars_of(100 * np.exp(np.cumsum(0.02 * rng.standard_normal(400))))
    long_only = strategy_cls(**kwargs).target_weights(bars)  # long-only is the shared default
    both = strategy_cls(**kwargs).with_rules(LONG_SHORT).target_weights(bars)
    assert set(np.unique(long_only)) <= {0.0, 1.0} and (both < 0).any()
    np.testing.assert_array_equal(long_only, np.maximum(both, 0))  # mean reversion too (module docstring)


def test_strategy_rules_follow_design() -> None:
    close = bars_of(np.array([10.0, 11, 12, 11, 10, 9, 10, 11]))
    w = Momentum(lookback=2).with_rules(LONG_SHORT).target_weights(close)
    # w[t] = sign(close[t]/close[t-2] - 1), 0 before bar 2
    np.testing.assert_array_equal(w, [0, 0, 1, 0, -1, -1, 0, 1])
    w = SmaCrossover(fast=2, slow=3).with_rules(LONG_SHORT).target_weights(close)
    # SMA2 vs SMA3 from bar 2: (11.5>11) (11.5>11.33) (10.5<11) (9.5<10) (9.5<9.67) (10.5>10)
    np.testing.assert_array_equal(w, [0, 0, 1, 1, -1, -1, -1, 1])
    assert (BuyAndHold().target_weights(close) == 1).all()


def test_invalid_strategy_parameters_name_the_key() -> None:
    with pytest.raises(ValueError, match="strategy.lookback must be >= 1"):
        Momentum(lookback=0)
    with pytest.raises(ValueError, match="strategy.fast must be < strategy.slow"):
        SmaCrossover(fast=20, slow=10)
    with pytest.raises(ValueError, match="exit_z"):
        MeanReversion(entry_z=1.0, exit_z=2.0)
    with pytest.raises(ValueError, match="backtest.commission must be >= 0"):
        BacktestConf(commission=-0.1)
    with pytest.raises(ValueError, match="strategy.forecast_threshold must be >= 0"):
        StrategyRules(forecast_threshold=-1.0)


def test_forecasts_become_weights_by_the_shared_rules() -> None:
    strategy = Momentum(lookback=2).with_rules(StrategyRules(long_only=False, forecast_threshold=0.5))
    forecast = np.array([9.0, 9.0, 1.0, 0.2, -0.2, -1.0, np.nan])
    # warm-up (2 bars) flat; beyond +-0.5 long/short; inside the band and NaN flat
    np.testing.assert_array_equal(strategy.weights_from_forecast(forecast), [0, 0, 1, 0, 0, -1, 0])
    np.testing.assert_array_equal(Momentum(lookback=2).weights_from_forecast(forecast), [0, 0, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("risk_free_rate", [0.0, 0.03])
def test_benchmark_relative_and_tail_metrics_equal_empyrical(risk_free_rate: float) -> None:
    """alpha, beta, information ratio, VaR and CVaR per segment against empyrical-reloaded on a real backtest: the
    same per-bar returns (the segment's strategy returns against buy and hold's), empyrical's conventions."""
    empyrical = pytest.importorskip("empyrical")
    from runner.data.series import bundled_bars

    bars = bundled_bars("sp500").iloc[-1500:]
    close = bars["close"].to_numpy()
    weights = Momentum(40).target_weights(bars) * 0.7
    config = BacktestConf(periods_per_year=252, risk_free_rate=risk_free_rate, commission=0.0005)
    result = run_backtest(close, weights, 900, 1200, config, bars.index)
    rf = risk_free_rate / 252
    for segment, (start, stop) in result.bounds.items():
        s = result.strategy_returns[start + (segment == "train"):stop]  # train's first bar has no return
        b = result.bar_returns[start + (segment == "train"):stop]
        m = result.metrics[segment]
        assert m["beta"] == pytest.approx(empyrical.beta(s, b, risk_free=rf), rel=1e-12)
        assert m["alpha"] == pytest.approx(empyrical.alpha(s, b, risk_free=rf, annualization=252), rel=1e-10)
        assert m["information_ratio"] == pytest.approx(empyrical.excess_sharpe(s, b) * math.sqrt(252), rel=1e-12)
        assert m["value_at_risk"] == pytest.approx(empyrical.value_at_risk(s), rel=1e-12)
        assert m["conditional_value_at_risk"] == pytest.approx(empyrical.conditional_value_at_risk(s), rel=1e-12)
