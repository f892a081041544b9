"""Engine benchmark: SMA-crossover weights -> full results (returns, equity, drawdown, fills, round trips,
metrics) on synthetic bars, as ns/bar, beside a plain numpy reference of the returns/equity part and, when
vectorbt is installed (``pip install -e ".[bench]"``), vectorbt's ``Portfolio.from_signals`` on the same long/short
signals with its stats (its numba functions compiled before timing).

    python bench/engine.py [--sizes 1e4 1e5 1e6 1e7] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from runner.config.schema import BacktestConf, StrategyRules
from runner.engine.backtest import run_backtest
from strategies.mean_reversion import MeanReversion
from strategies.sma_crossover import SmaCrossover

LONG_SHORT = StrategyRules(long_only=False)


def reference(close: np.ndarray, weights: np.ndarray, cost: float) -> np.ndarray:
    """Plain numpy: returns and equity only."""
    r = np.diff(close) / close[:-1]
    s = weights[:-1] * r - cost * np.abs(np.diff(weights))
    return 100_000.0 * np.cumprod(1.0 + s)


def vectorbt_signals(close: np.ndarray, weights: np.ndarray, cost: float) -> object:
    """vectorbt on the same positions: long while w > 0, short while w < 0, fees on traded value; with stats."""
    import vectorbt as vbt

    portfolio = vbt.Portfolio.from_signals(close, entries=weights > 0, exits=weights <= 0,
                                           short_entries=weights < 0, short_exits=weights >= 0, fees=cost,
                                           init_cash=100_000.0, freq="1D")
    return portfolio.stats(silence_warnings=True)


def best_of(func, repeat: int, *args: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6, 1e7])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    config = BacktestConf(periods_per_year=252)
    try:
        import vectorbt  # noqa: F401

        with_vbt = True
    except ImportError:
        with_vbt = False
    print(f"{'bars':>10} {'engine ns/bar':>14} {'numpy ref ns/bar':>17} {'ratio':>6} {'trades':>8} "
          f"{'sma weights ns/bar':>19} {'mean_rev weights ns/bar':>24}"
          + (f" {'vbt from_signals ns/bar':>24} {'vbt/engine':>10}" if with_vbt else ""))
    for size in args.sizes:
        n = int(size)
        rng = np.random.default_rng(0)
        close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(n)))
        bars = pd.DataFrame({"close": close})
        strategy = SmaCrossover(fast=10, slow=50).with_rules(LONG_SHORT)
        weights_time = best_of(strategy.target_weights, args.repeat, bars)
        weights = strategy.target_weights(bars)
        mr_time = best_of(MeanReversion(20, 2.0, 0.5).with_rules(LONG_SHORT).target_weights,
                          1 if n >= 1e6 else args.repeat, bars)
        train_end, val_end = int(0.6 * n), int(0.8 * n)
        result = run_backtest(close, weights, train_end, val_end, config)
        engine_time = best_of(run_backtest, args.repeat, close, weights, train_end, val_end, config)
        ref_time = best_of(reference, args.repeat, close, weights, config.cost_rate)
        vbt_cells = ""
        if with_vbt:
            vectorbt_signals(close[:1000], weights[:1000], config.cost_rate)  # numba compiles here, not timed
            vbt_time = best_of(vectorbt_signals, args.repeat, close, weights, config.cost_rate)
            vbt_cells = f" {vbt_time / n * 1e9:>24.1f} {vbt_time / engine_time:>10.2f}"
        print(f"{n:>10} {engine_time / n * 1e9:>14.1f} {ref_time / n * 1e9:>17.1f} "
              f"{engine_time / ref_time:>6.2f} {len(result.trades):>8} {weights_time / n * 1e9:>19.1f} "
              f"{mr_time / n * 1e9:>24.1f}{vbt_cells}")


if __name__ == "__main__":
    main()
