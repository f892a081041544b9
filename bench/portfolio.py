"""Portfolio engine benchmark: target weights (bars x assets) in -> returns, equity, drawdown, fills, round trips
and per-segment metrics out, against vectorbt's ``Portfolio.from_orders`` on the same weights and costs and
against a fused per-bar loop (numba) that computes only returns, equity and drawdown: the floor.

    pip install -e ".[bench]"   # vectorbt (and numba with it)
    python bench/portfolio.py [--shapes 500x2520 50x25200] [--repeat 3]

The weights are cross-sectional momentum's (top 10% by 20-bar return, inverse-volatility sized, long only,
rebalanced every bar), so positions enter, exit and resize as in a real run. Each engine is timed best of
``--repeat`` after one warm-up call (numba's compilation is not counted). The two engines' conventions differ:
vectorbt trades every asset back to its target weight each bar (the drift since the last close, too) and
charges fees on that, where this engine charges costs on changes of the target weight (DESIGN's formula);
with zero costs the two must agree to rounding, which is checked and printed.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import pandas as pd
from engine import best_of  # bench/engine.py (this folder is on sys.path when run as a script)

from runner.config.schema import BacktestConf, StrategyRules
from runner.data.universe import Universe
from runner.engine.backtest import run_backtest
from strategies.xs_momentum import XsMomentum

COST = 0.0005


def universe_of(n_assets: int, n_bars: int, seed: int = 0) -> Universe:
    rng = np.random.default_rng(seed)
    log_returns = 0.0002 + 0.01 * rng.standard_normal((n_bars, 1)) + 0.015 * rng.standard_normal((n_bars, n_assets))
    close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
    index = pd.bdate_range("1990-01-01", periods=n_bars, name="timestamp")
    return Universe("bench", index, [f"S{i:03d}" for i in range(n_assets)], close, {})


def ours(universe: Universe, weights: np.ndarray, cost: float, split: bool = True) -> Any:
    """Train/val/test segments (what a run computes); ``split=False``: one segment, one continuous equity."""
    n = len(universe.index)
    ends = (int(0.6 * n), int(0.8 * n)) if split else (n, n)
    return run_backtest(universe.close, weights, *ends, BacktestConf(commission=cost, periods_per_year=252),
                        universe.index, symbols=universe.symbols)


def core(universe: Universe, weights: np.ndarray, cost: float) -> Any:
    """Only what the floor computes (held weights, returns net of costs, equity, drawdown), through the engine's
    own functions: the numpy passes' price against one fused loop."""
    from runner.engine.backtest import segment_curves
    from runner.engine.portfolio import accounting, equal_weight_index, holdings

    n = len(universe.index)
    held, r, priced = holdings(weights, universe.close, 1.0, None)
    _, _, paid, s = accounting(held, r, np.full(held.shape[1], cost), None)
    return segment_curves(equal_weight_index(r, priced), s, {"all": (0, n)}, 100_000.0, float(paid[0]))


def vectorbt_run(universe: Universe, weights: np.ndarray, cost: float) -> dict[str, Any]:
    import vectorbt as vbt

    close = pd.DataFrame(universe.close, index=universe.index, columns=universe.symbols)
    portfolio = vbt.Portfolio.from_orders(close, pd.DataFrame(weights, index=close.index, columns=close.columns),
                                          size_type="targetpercent", group_by=True, cash_sharing=True,
                                          call_seq="auto", fees=cost, init_cash=100_000.0, freq="1D")
    return {"returns": portfolio.returns(), "value": portfolio.value(), "drawdown": portfolio.drawdown(),
            "orders": portfolio.orders.count(), "win_rate": portfolio.trades.win_rate(),
            "sharpe": portfolio.sharpe_ratio(), "max_drawdown": portfolio.max_drawdown()}


def fused_floor() -> Any:
    """Returns, equity and drawdown in one pass over the asset-bars (DESIGN's formula), compiled by numba."""
    import numba

    @numba.njit(cache=False)
    def loop(close: np.ndarray, weights: np.ndarray, cost: float, capital: float) -> tuple[np.ndarray, ...]:
        n, m = close.shape
        s, equity, drawdown = np.empty(n), np.empty(n), np.empty(n)
        entry = 0.0
        for i in range(m):
            entry += cost * abs(weights[0, i])
        equity[0], peak, s[0] = capital * (1.0 - entry), capital, np.nan
        drawdown[0] = 1.0 - equity[0] / peak
        for t in range(1, n):
            total = 0.0
            for i in range(m):
                total += weights[t - 1, i] * (close[t, i] / close[t - 1, i] - 1.0)
                total -= cost * abs(weights[t, i] - weights[t - 1, i])
            s[t] = total
            equity[t] = equity[t - 1] * (1.0 + total)
            peak = max(peak, equity[t])
            drawdown[t] = 1.0 - equity[t] / peak
        return s, equity, drawdown

    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["500x2520", "50x25200"], help="ASSETSxBARS")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    try:
        floor = fused_floor()
    except ImportError:
        floor = None
    for shape in args.shapes:
        row = measure(shape, args.repeat, floor)
        print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


def measure(shape: str, repeat: int, floor: Any) -> dict[str, Any]:
    """One shape: the engine, its core, the floor and vectorbt timed, and the engines' equity compared."""
    n_assets, n_bars = (int(v) for v in shape.lower().split("x"))
    universe = universe_of(n_assets, n_bars)
    strategy = XsMomentum(20, max(1, n_assets // 10), "inverse_volatility", 20).with_rules(StrategyRules())
    weights = strategy.portfolio_weights(universe)
    cells = n_assets * n_bars
    result = ours(universe, weights, COST)
    whole = ours(universe, weights, COST, split=False).equity
    t_ours = best_of(lambda: ours(universe, weights, COST), repeat)
    t_core = best_of(lambda: core(universe, weights, COST), repeat)
    row = {"shape": shape, "fills": len(result.fills), "trades": len(result.trades),
           "ours_ns": t_ours / cells * 1e9, "core_ns": t_core / cells * 1e9}
    if floor is not None:
        floor(universe.close, weights, COST, 100_000.0)
        t_floor = best_of(lambda: floor(universe.close, weights, COST, 100_000.0), repeat)
        _, floor_equity, _ = floor(universe.close, weights, COST, 100_000.0)
        row.update(floor_ns=t_floor / cells * 1e9, vs_floor=t_ours / t_floor, core_vs_floor=t_core / t_floor,
                   floor_equity_diff=float(np.max(np.abs(floor_equity / whole - 1))))
    try:
        vectorbt_run(universe, weights, COST)  # compiles vectorbt's numba functions
    except ImportError:
        return row
    t_vbt = best_of(lambda: vectorbt_run(universe, weights, COST), repeat)
    free_ours, free_vbt = ours(universe, weights, 0.0, split=False), vectorbt_run(universe, weights, 0.0)
    paid_vbt = vectorbt_run(universe, weights, COST)
    row.update(vbt_ns=t_vbt / cells * 1e9, speedup=t_vbt / t_ours, vbt_orders=int(paid_vbt["orders"]),
               zero_cost_equity_diff=float(np.max(np.abs(free_vbt["value"].to_numpy() / free_ours.equity - 1))),
               final_equity_ours=float(whole[-1]), final_equity_vbt=float(paid_vbt["value"].iloc[-1]))
    return row


if __name__ == "__main__":
    main()
