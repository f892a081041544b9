"""The vectorised backtest engine (pure numpy; no I/O).

Conventions (DESIGN, "Execution and metric conventions"):
- ``w[t]`` is decided with data up to bar t's close, traded at that close and held to close t+1.
- ``r[t] = close[t]/close[t-1] - 1``; ``s[t] = w[t-1]*r[t] - (commission+slippage)*|w[t]-w[t-1]|`` with
  ``w[-1] = 0``; ``s[0]`` is undefined (NaN in the tables, left out of every metric).
- One continuous backtest; the train/val/test segments are slices of it. A segment's equity compounds
  exactly its own bars' returns from ``initial_capital``; its benchmark is buy-and-hold over the same bars.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from runner.data import SEGMENTS
from runner.metrics import segment_metrics
from runner.trades import fills_table, round_trips


@dataclass(frozen=True)
class BacktestConfig:
    initial_capital: float = 100_000.0
    commission: float = 0.0005  # fraction of traded notional
    slippage: float = 0.0  # fraction of traded notional
    periods_per_year: int = 252
    risk_free_rate: float = 0.0  # annual
    max_leverage: float = 1.0

    def __post_init__(self) -> None:
        checks = {"initial_capital": self.initial_capital > 0, "commission": self.commission >= 0,
                  "slippage": self.slippage >= 0, "periods_per_year": self.periods_per_year > 0,
                  "max_leverage": self.max_leverage > 0,
                  "risk_free_rate": bool(np.isfinite(self.risk_free_rate))}
        for key, ok in checks.items():
            value = getattr(self, key)
            if not ok or not np.isfinite(value):
                allowed = "finite" if key == "risk_free_rate" else ">= 0" if key in ("commission", "slippage") \
                    else "> 0"
                raise ValueError(f"backtest.{key} must be {allowed}, got {value!r}.")

    @property
    def cost_rate(self) -> float:
        return self.commission + self.slippage


@dataclass
class BacktestResult:
    """Per-bar arrays over all bars, segment bounds, trades and per-segment metrics."""

    index: pd.DatetimeIndex
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

    def segment_labels(self) -> np.ndarray:
        labels = np.empty(len(self.close), dtype=object)
        for name, (start, stop) in self.bounds.items():
            labels[start:stop] = name
        return labels

    def portfolio_values(self) -> pd.DataFrame:
        """One row per bar with exactly the DESIGN columns."""
        return pd.DataFrame({
            "timestamp": self.index, "segment": self.segment_labels(), "close": self.close,
            "weight": self.weights, "strategy_return": self.strategy_returns, "equity": self.equity,
            "benchmark_equity": self.benchmark_equity, "drawdown": self.drawdown,
        })

    def flat_metrics(self) -> dict[str, float]:
        """``{segment}_{name}`` keys, as logged to MLflow."""
        return {f"{segment}_{name}": value for segment, values in self.metrics.items()
                for name, value in values.items()}

    def to_results(self) -> dict[str, Any]:
        """The mapping ``MLflowLogger.log_backtest_results`` logs."""
        return {"metrics": self.flat_metrics(), "segment_metrics": self.metrics,
                "segments": {k: {"start": self.index[a], "end": self.index[b - 1], "bars": b - a}
                             for k, (a, b) in self.bounds.items() if b > a},
                "trades": self.trades, "fills": self.fills, "portfolio_values": self.portfolio_values()}


def segment_bounds(n_bars: int, train_end: int, val_end: int) -> dict[str, tuple[int, int]]:
    return dict(zip(SEGMENTS, ((0, train_end), (train_end, val_end), (val_end, n_bars)), strict=True))


def run_backtest(close: np.ndarray, weights: np.ndarray, train_end: int, val_end: int,
                 config: BacktestConfig | None = None, index: pd.DatetimeIndex | None = None) -> BacktestResult:
    """Backtest target weights over all bars; metrics per segment (train = [0, train_end), ...)."""
    config = config or BacktestConfig()
    close = np.ascontiguousarray(close, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    n = len(close)
    if weights.shape != close.shape:
        raise ValueError(f"weights has shape {weights.shape} but close has {close.shape}; give one per bar.")
    if not np.isfinite(weights).all():
        raise ValueError(f"weights has {int((~np.isfinite(weights)).sum())} non-finite values; use 0 for flat.")
    if n < 2:
        raise ValueError(f"a backtest needs at least 2 bars, got {n}.")
    if weights.max() > config.max_leverage or weights.min() < -config.max_leverage:
        weights = np.clip(weights, -config.max_leverage, config.max_leverage)
    index = index if index is not None else pd.RangeIndex(n)

    # Each step writes into a preallocated array: the engine is memory-bound, so passes are what cost.
    bar_returns = np.empty(n)
    bar_returns[0] = np.nan
    np.divide(close[1:], close[:-1], out=bar_returns[1:])
    bar_returns[1:] -= 1.0
    turnover = np.empty(n)  # |w[t] - w[t-1]| with w[-1] = 0
    turnover[0] = abs(weights[0])
    np.subtract(weights[1:], weights[:-1], out=turnover[1:])
    np.abs(turnover[1:], out=turnover[1:])
    strategy_returns = np.empty(n)
    strategy_returns[0] = np.nan
    np.multiply(weights[:-1], bar_returns[1:], out=strategy_returns[1:])
    growth = np.empty(n)  # 1 + s[t], reused by the equity curves and the round trips
    if config.cost_rate:
        np.multiply(turnover[1:], config.cost_rate, out=growth[1:])
        strategy_returns[1:] -= growth[1:]
    growth[0] = 1.0
    np.add(strategy_returns[1:], 1.0, out=growth[1:])

    bounds = segment_bounds(n, train_end, val_end)
    equity, benchmark_equity, drawdown = np.empty(n), np.empty(n), np.empty(n)
    capital = config.initial_capital
    metrics: dict[str, dict[str, float]] = {}
    for start, stop in bounds.values():
        if stop <= start:
            continue
        first = max(start, 1)  # s[0] is undefined: train's equity starts flat at bar 0
        seg_equity = equity[start:stop]
        seg_equity[0] = 1.0
        np.cumprod(growth[first:stop], out=equity[first:stop])
        seg_equity *= capital
        np.multiply(close[start:stop], capital / close[first - 1], out=benchmark_equity[start:stop])
        _drawdown(seg_equity, capital, out=drawdown[start:stop])

    trades = round_trips(weights, close, growth, turnover, config.cost_rate, index, equity)
    scratch = growth  # no longer needed: the metrics' temporaries go here instead of new arrays
    for name, (start, stop) in bounds.items():
        if stop > start:
            first = max(start, 1)
            metrics[name] = segment_metrics(
                strategy_returns[first:stop], bar_returns[first:stop], equity[start:stop], drawdown[start:stop],
                weights[start:stop], turnover[start:stop], config.periods_per_year, config.risk_free_rate,
                capital, benchmark_total_return=close[stop - 1] / close[first - 1] - 1.0, scratch=scratch)
    fills = fills_table(weights, close, turnover, config.cost_rate, index)
    _add_trade_metrics(metrics, trades, bounds)
    return BacktestResult(index, close, weights, bar_returns, strategy_returns, equity, benchmark_equity,
                          drawdown, bounds, fills, trades, metrics)


def _drawdown(equity: np.ndarray, capital: float, out: np.ndarray) -> np.ndarray:
    """``1 - E/peak`` where the peak also counts the starting capital (a first-bar loss is a drawdown)."""
    np.maximum.accumulate(equity, out=out)
    below = int(np.searchsorted(out, capital))  # the running peak is sorted: fix only its prefix
    out[:below] = capital
    np.divide(equity, out, out=out)
    np.subtract(1.0, out, out=out)
    return out


def _add_trade_metrics(metrics: dict[str, dict[str, float]], trades: pd.DataFrame,
                       bounds: dict[str, tuple[int, int]]) -> None:
    """Round-trip statistics per segment, over trades closed inside it (an open trade never counts)."""
    closed = trades[~trades["is_open"]] if len(trades) else trades
    exit_bars = closed["exit_bar"].to_numpy() if len(closed) else np.empty(0, dtype=int)
    returns = closed["return"].to_numpy() if len(closed) else np.empty(0)
    for name, (start, stop) in bounds.items():
        if name not in metrics:
            continue
        mask = (exit_bars >= start) & (exit_bars < stop)
        seg = returns[mask]
        wins, losses = seg[seg > 0], seg[seg < 0]
        metrics[name]["num_trades"] = float(len(seg))
        # NaN where undefined: no closed trades -> no win rate/expectancy; no losing trade -> no factor.
        metrics[name]["win_rate"] = float(len(wins) / len(seg)) if len(seg) else np.nan
        metrics[name]["profit_factor"] = float(wins.sum() / -losses.sum()) if len(losses) else np.nan
        metrics[name]["expectancy"] = float(seg.mean()) if len(seg) else np.nan
