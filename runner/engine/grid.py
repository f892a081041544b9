"""A grid of configurations on one series in one engine pass: bars x configurations weights in, one result per
configuration out, equal to what ``run_backtest`` gives each alone.

Each column is its own one-asset book (never one book of many assets: no gross-leverage cap or drift across
columns). The per-bar accounting runs on all columns at once, with the arithmetic of ``runner.engine.portfolio``
and ``segment_curves`` applied element by element in the same order, so the numbers are the single run's bit for
bit; each configuration's trades, fills and metrics then come from ``series_result``, the single run's own tail.
Columns are processed in chunks of ``chunk`` so that memory stays bounded however large the grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from runner.engine.backtest import checked_weights, segment_bounds, series_result
from runner.engine.portfolio import last_rebalance, rebalance_mask

if TYPE_CHECKING:
    import pandas as pd

    from runner.config.schema import BacktestConf
    from runner.engine.backtest import BacktestResult

CHUNK = 128  # configurations per pass: ~10 arrays of 5,000 bars x 128 float64 columns is about 50 MB


def grid_arrays(close: np.ndarray, targets: np.ndarray, config: BacktestConf, index: pd.Index,
                bounds: dict[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The engine pass over ``targets`` (bars x configurations, one series' ``close``): held weights, turnover, net
    returns ``s`` and each segment's equity and drawdown, as bars x configurations arrays (Fortran order: each
    configuration's column is contiguous), plus the bar returns and the buy-and-hold curve they share."""
    n, _ = targets.shape
    r = np.empty(n)
    r[0] = 0.0
    np.divide(close[1:], close[:-1], out=r[1:])
    r[1:] -= 1.0
    weights = np.clip(np.asfortranarray(targets), -config.max_leverage, config.max_leverage)  # one asset: clipping
    mask = rebalance_mask(config.rebalance, index, n)
    if mask is None:
        turnover = np.empty_like(weights)
        np.abs(weights[0], out=turnover[0])
        np.abs(np.subtract(weights[1:], weights[:-1], out=turnover[1:]), out=turnover[1:])
    else:  # drift between rebalances (drifted_holdings and before_trading, for a book of one asset)
        last = last_rebalance(mask)
        growth = np.cumprod(1.0 + r)
        base = weights[last]
        values = base * (growth / growth[last])[:, None]
        weights = np.asfortranarray(values / (1.0 - base + values))
        held = np.zeros_like(weights)
        grown = weights[:-1] * (1.0 + r[1:, None])
        held[1:] = grown / (1.0 + weights[:-1] * r[1:, None])
        turnover = np.abs(weights - held)
        turnover[~mask[:, None] & (weights != 0)] = 0.0
    paid = turnover * config.cost_rate
    s = np.empty_like(weights)
    s[0] = np.nan
    np.multiply(weights[:-1], r[1:, None], out=s[1:])
    s[1:] -= paid[1:]
    equity, drawdown = np.full_like(weights, np.nan), np.full_like(weights, np.nan)
    benchmark = np.full(n, np.nan)
    capital = config.initial_capital
    for start, stop in bounds.values():  # segment_curves, column by column at once
        if stop <= start:
            continue
        first = max(start, 1)
        seg = equity[start:stop]
        seg[: first - start] = 1.0
        np.cumprod(np.add(s[first:stop], 1.0, out=equity[first:stop]), axis=0, out=equity[first:stop])
        if start == 0:
            seg *= capital * (1.0 - paid[0])
        else:
            seg *= capital
        np.multiply(close[start:stop], capital / close[first - 1], out=benchmark[start:stop])
        peak = np.maximum.accumulate(np.maximum(seg, capital, out=drawdown[start:stop]), axis=0,
                                     out=drawdown[start:stop])
        np.subtract(1.0, np.divide(seg, peak, out=peak), out=drawdown[start:stop])
    bar_returns = r.copy()
    bar_returns[0] = np.nan
    return {"weights": weights, "turnover": turnover, "strategy_returns": s, "equity": equity, "drawdown": drawdown,
            "benchmark": benchmark, "bar_returns": bar_returns}


def grid_backtests(close: np.ndarray, targets: np.ndarray, train_end: int, val_end: int, config: BacktestConf,
                   index: pd.Index, chunk: int = CHUNK) -> Iterator[BacktestResult]:
    """One ``BacktestResult`` per column of ``targets`` (bars x configurations), in column order, equal to
    ``run_backtest(close, targets[:, j], train_end, val_end, config, index)``. ``config.periods_per_year`` must be
    resolved (not ``auto``)."""
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    bounds = segment_bounds(n, train_end, val_end)
    for begin in range(0, targets.shape[1], chunk):
        block = checked_weights(np.broadcast_to(close[:, None], (n, min(chunk, targets.shape[1] - begin))),
                                np.asarray(targets[:, begin:begin + chunk], dtype=np.float64))
        arrays = grid_arrays(close, block, config, index, bounds)
        for j in range(block.shape[1]):
            yield series_result(index, close, arrays["weights"][:, j], arrays["bar_returns"],
                                arrays["strategy_returns"][:, j], arrays["turnover"][:, j], arrays["equity"][:, j],
                                arrays["benchmark"], arrays["drawdown"][:, j], bounds, config)
