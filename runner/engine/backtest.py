"""The vectorised backtest: target weights over all bars in, per-bar returns, equity, trades, metrics out.

One engine for one series and for a universe: ``close`` and ``weights`` are one value per bar, or bars x
assets (``runner.engine.portfolio`` does the accounting; a single series is its one-column case).

Conventions (DESIGN, "Execution and metric conventions"):
- ``w[t]`` is decided with data up to bar t's close, traded at that close and held to close t+1.
- ``r[t] = close[t]/close[t-1] - 1``; ``s[t] = w[t-1]*r[t] - (commission+slippage)*|w[t]-w[t-1]|`` with
  ``w[-1] = 0``; ``s[0]`` is undefined (NaN in the tables, left out of the return statistics), but a position
  taken at bar 0 pays its entry cost: equity starts at ``initial_capital * (1 - cost * |w[0]|)``.
- One continuous backtest; the train/val/test segments are slices of it. A segment's equity compounds
  exactly its own bars' returns from ``initial_capital``; its benchmark is buy-and-hold over the same bars
  (a universe's: its equal-weight index, each bar the mean return of the assets priced then).
- A universe's per-bar table has the same columns: ``close`` is the equal-weight index (1 at bar 0) and
  ``weight`` the gross exposure ``sum_i |w[t,i]|``; the per-asset weights are ``weights_table()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from runner.config.schema import BacktestConf
from runner.data.series import SEGMENTS, infer_periods_per_year
from runner.engine.metrics import segment_metrics, trade_metrics
from runner.engine.portfolio import accounting, cost_vector, equal_weight_index, holdings, rebalance_mask
from runner.engine.trades import fills_table, portfolio_fills, portfolio_round_trips, round_trips


@dataclass
class BacktestResult:
    """Per-bar arrays over all bars, segment bounds, trades and per-segment metrics."""

    index: pd.Index
    close: np.ndarray
    weights: np.ndarray
    bar_returns: np.ndarray
    strategy_returns: np.ndarray
    equity: np.ndarray
    benchmark_equity: np.ndarray
    drawdown: np.ndarray
    bounds: dict[str, tuple[int, int]]
    fills: pd.DataFrame
    trades: pd.DataFrame
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    symbols: list[str] | None = None  # a universe's assets (None: a single series)
    asset_weights: np.ndarray | None = None  # (bars, assets): the weights held after each bar's trade
    contributions: dict[str, dict[str, float]] = field(default_factory=dict)  # segment -> symbol -> sum of
    # the asset's per-bar contributions w[t-1,i]*r[t,i] - c_i*|w[t,i]-h[t,i]| (additive, not compounded)

    def segment_labels(self) -> pd.Categorical:
        codes = np.full(len(self.close), -1, dtype=np.int8)
        for code, (start, stop) in enumerate(self.bounds.values()):
            codes[start:stop] = code
        return pd.Categorical.from_codes(codes, categories=list(self.bounds))

    def portfolio_values(self) -> pd.DataFrame:
        """One row per bar with exactly the DESIGN columns (views of the result's arrays: no copy)."""
        return pd.DataFrame({
            "timestamp": self.index, "segment": self.segment_labels(), "close": self.close,
            "weight": self.weights, "strategy_return": self.strategy_returns, "equity": self.equity,
            "benchmark_equity": self.benchmark_equity, "drawdown": self.drawdown,
        }, copy=False)

    def weights_table(self) -> pd.DataFrame:
        """A universe's weights, long format ``timestamp, symbol, weight``: a row per held position and one
        (weight 0) where a position is closed."""
        held = self.asset_weights
        keep = held != 0
        keep[1:] |= held[:-1] != 0
        bars, assets = np.nonzero(keep)
        return pd.DataFrame({"timestamp": self.index[bars],
                             "symbol": pd.Categorical.from_codes(assets, categories=self.symbols),
                             "weight": held[bars, assets]}, copy=False)

    def flat_metrics(self) -> dict[str, float]:
        """``{segment}_{name}`` keys, as logged to MLflow."""
        return {f"{segment}_{name}": value for segment, values in self.metrics.items()
                for name, value in values.items()}

    def to_results(self) -> dict[str, Any]:
        """The mapping ``MLflowLogger.log_backtest_results`` logs."""
        results = {"metrics": self.flat_metrics(), "segment_metrics": self.metrics,
                   "segments": {k: {"start": self.index[a], "end": self.index[b - 1], "bars": b - a}
                                for k, (a, b) in self.bounds.items() if b > a},
                   "trades": self.trades, "fills": self.fills, "portfolio_values": self.portfolio_values()}
        if self.symbols is not None:
            results.update(weights=self.weights_table(), contributions=self.contributions,
                           universe={"symbols": self.symbols, "n_assets": len(self.symbols)})
        return results


def segment_bounds(n_bars: int, train_end: int, val_end: int) -> dict[str, tuple[int, int]]:
    return dict(zip(SEGMENTS, ((0, train_end), (train_end, val_end), (val_end, n_bars)), strict=True))


def checked_weights(close: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One finite weight per bar (and asset), or a ValueError saying what is wrong."""
    if weights.shape != close.shape:
        raise ValueError(f"weights has shape {weights.shape} but close has {close.shape}; give one per bar"
                         f"{' and asset' if close.ndim == 2 else ''}.")
    if not np.isfinite(weights).all():
        raise ValueError(f"weights has {int((~np.isfinite(weights)).sum())} non-finite values; use 0 for flat.")
    if len(close) < 2:
        raise ValueError(f"a backtest needs at least 2 bars, got {len(close)}.")
    return weights


def segment_curves(close: np.ndarray, strategy_returns: np.ndarray, bounds: dict[str, tuple[int, int]],
                   capital: float, entry_cost: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equity, buy-and-hold equity and drawdown, each restarting from ``capital`` at every segment.

    ``entry_cost`` is what the position taken at bar 0 pays (``cost * |w[0]|``): the first segment's equity
    starts at ``capital * (1 - entry_cost)``, as a trade at any later close pays its cost in ``s[t]``."""
    n = len(close)
    equity, benchmark, drawdown = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for start, stop in bounds.values():
        if stop <= start:
            continue
        first = max(start, 1)  # s[0] is undefined: train's equity starts flat at bar 0
        seg = equity[start:stop]
        seg[: first - start] = 1.0
        np.cumprod(np.add(strategy_returns[first:stop], 1.0, out=equity[first:stop]), out=equity[first:stop])
        seg *= capital * (1.0 - entry_cost) if start == 0 else capital
        np.multiply(close[start:stop], capital / close[first - 1], out=benchmark[start:stop])
        # 1 - E/peak, where the peak also counts the starting capital (a first-bar loss is a drawdown)
        peak = np.maximum.accumulate(np.maximum(seg, capital, out=drawdown[start:stop]), out=drawdown[start:stop])
        np.subtract(1.0, np.divide(seg, peak, out=peak), out=drawdown[start:stop])
    return equity, benchmark, drawdown


def run_backtest(close: np.ndarray, weights: np.ndarray, train_end: int, val_end: int,
                 config: BacktestConf | None = None, index: pd.Index | None = None,
                 segments: dict[str, tuple[int, int]] | None = None, symbols: list[str] | None = None,
                 ) -> BacktestResult:
    """Backtest target weights over all bars; metrics per segment (train = [0, train_end), ...).

    ``close``/``weights``: one per bar, or (bars, assets) for a universe named by ``symbols`` (NaN closes:
    no price there). ``segments`` names other disjoint ``[start, stop)`` segments instead (walk-forward
    folds); bars outside every segment have NaN equity, benchmark and drawdown. ``periods_per_year=auto``
    is inferred from a dated ``index`` (``runner.data.series.infer_periods_per_year``)."""
    config = config or BacktestConf()
    if config.periods_per_year == "auto":
        config = dataclasses.replace(config, periods_per_year=infer_periods_per_year(index))
    close = np.asarray(close, dtype=np.float64)
    weights = checked_weights(close, np.asarray(weights, dtype=np.float64))
    n = len(close)
    panel = close.reshape(n, -1)
    single = panel.shape[1] == 1  # one asset: reported as that series (its close, its round trips)
    close = panel[:, 0] if single else panel
    index = index if index is not None else pd.RangeIndex(n)
    if single:
        costs = np.array([config.cost_rate])
    else:
        symbols = list(symbols) if symbols is not None else [f"asset{i}" for i in range(panel.shape[1])]
        costs = cost_vector(symbols, config.cost_rate, config.asset_costs)
    mask = rebalance_mask(config.rebalance, index, n)
    held_weights, r, priced = holdings(weights.reshape(n, -1), panel, config.max_leverage, mask)
    held, asset_turnover, paid, strategy_returns = accounting(held_weights, r, costs, mask)
    bounds = segments if segments is not None else segment_bounds(n, train_end, val_end)
    if single:
        level, held_weights, turnover, bar_returns = close, held_weights[:, 0], asset_turnover[:, 0], r[:, 0]
        bar_returns[0] = np.nan
        exposure = held_weights
    else:
        level = equal_weight_index(r, priced)
        bar_returns = np.r_[np.nan, level[1:] / level[:-1] - 1.0]
        turnover = asset_turnover.sum(axis=1)
        exposure = np.abs(held_weights).sum(axis=1)
    equity, benchmark_equity, drawdown = segment_curves(level, strategy_returns, bounds, config.initial_capital,
                                                        float(paid[0]))
    if single:
        return series_result(index, close, held_weights, bar_returns, strategy_returns, turnover, equity,
                             benchmark_equity, drawdown, bounds, config)
    price = panel if priced is None else pd.DataFrame(panel).ffill().to_numpy()
    trades = portfolio_round_trips(held_weights, price, costs, index, equity, symbols)
    fills = portfolio_fills(held_weights, held, asset_turnover, price, costs, index, symbols)
    metrics = per_segment_metrics(level, exposure, bar_returns, strategy_returns, turnover, equity, drawdown, bounds,
                                  trades, config)
    contributions: dict[str, dict[str, float]] = {}
    for name, (start, stop) in bounds.items():
        if stop <= start:
            continue
        first = max(start, 1)
        metrics[name]["avg_holdings"] = float(np.count_nonzero(held_weights[start:stop]) / (stop - start))
        earned = np.einsum("ij,ij->j", held_weights[first - 1:stop - 1], r[first:stop])
        earned -= costs * asset_turnover[first:stop].sum(axis=0)  # as s[t]: bar 0's entry cost is in equity
        contributions[name] = dict(zip(symbols, earned.tolist(), strict=True))
    return BacktestResult(index, level, exposure, bar_returns, strategy_returns, equity, benchmark_equity, drawdown,
                          bounds, fills, trades, metrics, symbols, held_weights, contributions)


def series_result(index: pd.Index, close: np.ndarray, weights: np.ndarray, bar_returns: np.ndarray,
                  strategy_returns: np.ndarray, turnover: np.ndarray, equity: np.ndarray, benchmark: np.ndarray,
                  drawdown: np.ndarray, bounds: dict[str, tuple[int, int]], config: BacktestConf) -> BacktestResult:
    """One series' result from its per-bar arrays (held weights, returns, turnover, curves): its trades, fills and
    metrics per segment. ``run_backtest`` and a grid of configurations (``runner.engine.grid``) both end here."""
    trades = round_trips(weights, close, strategy_returns, turnover, config.cost_rate, index, equity)
    fills = fills_table(weights, close, turnover, config.cost_rate, index)
    metrics = per_segment_metrics(close, weights, bar_returns, strategy_returns, turnover, equity, drawdown, bounds,
                                  trades, config)
    return BacktestResult(index, close, weights, bar_returns, strategy_returns, equity, benchmark, drawdown, bounds,
                          fills, trades, metrics)


def per_segment_metrics(level: np.ndarray, exposure: np.ndarray, bar_returns: np.ndarray,
                        strategy_returns: np.ndarray, turnover: np.ndarray, equity: np.ndarray, drawdown: np.ndarray,
                        bounds: dict[str, tuple[int, int]], trades: pd.DataFrame, config: BacktestConf,
                        ) -> dict[str, dict[str, float]]:
    """``segment_metrics`` and ``trade_metrics`` of every non-empty segment (``level``: the close, or a universe's
    index, whose buy and hold is the segment's benchmark)."""
    metrics: dict[str, dict[str, float]] = {}
    for name, (start, stop) in bounds.items():
        if stop <= start:
            continue
        first = max(start, 1)
        metrics[name] = segment_metrics(
            strategy_returns[first:stop], bar_returns[first:stop], equity[start:stop], drawdown[start:stop],
            exposure[start:stop], turnover[start:stop], config.periods_per_year, config.risk_free_rate,
            config.initial_capital, benchmark_total_return=level[stop - 1] / level[first - 1] - 1.0)
        metrics[name].update(trade_metrics(trades, start, stop))
    return metrics
