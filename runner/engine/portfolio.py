"""Portfolio accounting over a bars x assets weight matrix: tradability, the gross-leverage cap, the rebalance
schedule with drift between rebalances, per-asset costs, and per-bar returns (pure numpy).

Conventions (DESIGN, "Portfolios"; a single series is the one-column case of the same arithmetic):
- ``r[t,i] = close[t,i]/close[t-1,i] - 1``; 0 where asset i has no price at t or t-1 (nothing is held there).
- ``s[t] = sum_i w[t-1,i]*r[t,i] - sum_i c_i*|w[t,i] - h[t,i]|``, ``h`` being what the book holds at close t
  before it trades. With ``rebalance`` every bar, ``h[t] = w[t-1]``: DESIGN's formula, the targets are held
  constant and costs are paid on changes of the target. Otherwise ``h[t] = w[t-1,i]*(1+r[t,i]) / (1 + sum_j
  w[t-1,j]*r[t,j])`` (the weights drift with prices) and ``w[t] = h[t]`` on bars without a rebalance: no trade,
  no cost; at a rebalance the book trades from the drifted weights to the targets.
- Gross leverage ``sum_i |w[t,i]| <= max_leverage``: a bar's weights are scaled down together, never clipped
  one by one (for one asset the two agree).
- An asset without a price holds no weight: a position in it is sold at its last price at the first bar it has
  none. Between rebalances the proceeds stay cash until the next rebalance, even if the asset trades again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from runner.config.schema import REBALANCE
from runner.errors import ConfigError

CALENDAR = {"weekly": "W", "monthly": "M"}


def rebalance_mask(rebalance: Any, index: pd.Index | None, n: int) -> np.ndarray | None:
    """Bars at which the book trades to its targets (bar 0 always); None: every bar."""
    if rebalance in CALENDAR:
        if not isinstance(index, pd.DatetimeIndex):
            raise ConfigError(f"backtest.rebalance={rebalance} needs dated bars; use an integer k (every k bars).")
        naive = index.tz_localize(None) if index.tz is not None else index
        codes = naive.to_period(CALENDAR[rebalance]).asi8
        return np.r_[True, codes[1:] != codes[:-1]]
    if isinstance(rebalance, bool) or not isinstance(rebalance, (int, np.integer)) or rebalance < 1:
        raise ConfigError(f"backtest.rebalance={rebalance!r} is not valid; allowed: {REBALANCE}.")
    if rebalance == 1:
        return None
    return np.arange(n) % int(rebalance) == 0


def cap_gross_leverage(weights: np.ndarray, max_leverage: float) -> np.ndarray:
    """Each bar's weights scaled by ``min(1, max_leverage / sum_i |w[t,i]|)``; always a new array."""
    if weights.shape[1] == 1:  # scaling one weight is clipping it
        return np.clip(weights, -max_leverage, max_leverage)
    gross = np.abs(weights).sum(axis=1)
    over = gross > max_leverage
    if not over.any():
        return weights.copy()
    scale = np.ones(len(gross))
    scale[over] = max_leverage / gross[over]
    return weights * scale[:, None]


def asset_returns(close: np.ndarray, priced: np.ndarray | None) -> np.ndarray:
    """``r[t,i]`` with row 0 = 0, and 0 wherever asset i lacks a price at t or t-1 (``priced`` None: all have)."""
    r = np.empty_like(close)
    r[0] = 0.0
    np.divide(close[1:], close[:-1], out=r[1:])
    r[1:] -= 1.0
    if priced is not None:
        np.nan_to_num(r, copy=False, nan=0.0)
    return r


def last_rebalance(mask: np.ndarray) -> np.ndarray:
    """Per bar, the bar of the latest rebalance at or before it."""
    return np.maximum.accumulate(np.where(mask, np.arange(len(mask)), 0))


def drifted_holdings(targets: np.ndarray, r: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Weights held when trading only at rebalances (``last``: ``last_rebalance``): the last rebalance's
    targets grown by each asset's price since then, over the book's value (cash ``1 - sum w`` plus positions)."""
    growth = np.cumprod(1.0 + r, axis=0)
    base = targets[last]
    values = base * (growth / growth[last])
    book = 1.0 - base.sum(axis=1) + values.sum(axis=1)
    return values / book[:, None]


def before_trading(weights: np.ndarray, r: np.ndarray, drift: bool) -> np.ndarray:
    """``h[t]``: the weights held at close t before its trade (``h[0] = 0``)."""
    held = np.zeros_like(weights)
    if not drift:
        held[1:] = weights[:-1]
        return held
    grown = weights[:-1] * (1.0 + r[1:])
    book = 1.0 + np.einsum("ij,ij->i", weights[:-1], r[1:])
    np.divide(grown, book[:, None], out=held[1:])
    return held


def holdings(targets: np.ndarray, close: np.ndarray, max_leverage: float, mask: np.ndarray | None,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(w, r, priced)``: the weights the book holds after each bar's trade, asset returns, and where assets
    have prices (None when all do everywhere)."""
    priced = np.isfinite(close) if close.shape[1] > 1 else None  # one series' prices were checked by its loader
    priced = None if priced is None or priced.all() else priced
    weights = cap_gross_leverage(targets, max_leverage)
    if priced is not None:
        weights = np.where(priced, weights, 0.0)
    r = asset_returns(close, priced)
    if mask is not None:
        last = last_rebalance(mask)
        if priced is None:
            weights = drifted_holdings(weights, r, last)
        else:  # sold at its last price when it lost it, and out of the book until the next rebalance
            gaps = np.cumsum(~priced, axis=0)
            sold = ~priced | (gaps > gaps[last])
            weights = drifted_holdings(weights, np.where(sold, 0.0, r), last)
            weights[sold] = 0.0
    return weights, r, priced


def accounting(weights: np.ndarray, r: np.ndarray, costs: np.ndarray, mask: np.ndarray | None,
               ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """``(h, turnover, costs paid, s)`` per bar: the weights before trading (None when they are ``w[t-1]``),
    ``|w - h|`` per asset,
    ``sum_i c_i |w - h|`` and the net return ``s`` (``s[0]`` undefined: NaN; its cost is the entry cost the
    equity starts with). Between rebalances only the sale of an asset that lost its price trades."""
    if mask is None:  # h[t] = w[t-1]: in place, no (bars, assets) temporaries
        held = None
        turnover = np.empty_like(weights)
        np.abs(weights[0], out=turnover[0])
        np.abs(np.subtract(weights[1:], weights[:-1], out=turnover[1:]), out=turnover[1:])
    else:
        held = before_trading(weights, r, True)
        turnover = np.abs(weights - held)
        turnover[~mask[:, None] & (weights != 0)] = 0.0  # w = h up to rounding there: no trade
    paid = turnover[:, 0] * costs[0] if weights.shape[1] == 1 else turnover @ costs
    s = np.empty(len(weights))
    s[0] = np.nan
    if weights.shape[1] == 1:
        np.multiply(weights[:-1, 0], r[1:, 0], out=s[1:])
    else:
        np.einsum("ij,ij->i", weights[:-1], r[1:], out=s[1:])
    s[1:] -= paid[1:]
    return held, turnover, paid, s


def cost_vector(symbols: list[str], cost_rate: float, overrides: dict[str, float] | None) -> np.ndarray:
    """``c_i``: ``backtest.asset_costs[symbol]`` where given, else commission + slippage."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(symbols))
    if unknown:
        raise ConfigError(f"backtest.asset_costs names {unknown}, which are not in the universe; allowed symbols: "
                         f"{', '.join(symbols[:20])}{' ...' if len(symbols) > 20 else ''}.")
    for symbol, value in overrides.items():
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"backtest.asset_costs.{symbol} must be >= 0, got {value!r}.")
    return np.array([float(overrides.get(s, cost_rate)) for s in symbols])


def equal_weight_index(r: np.ndarray, priced: np.ndarray | None) -> np.ndarray:
    """The benchmark level: 1 at bar 0, then each bar the mean return of the assets priced at t-1 and t."""
    if priced is None:
        mean = r.mean(axis=1)
    else:
        both = priced[1:] & priced[:-1]
        counts = both.sum(axis=1)
        mean = np.r_[0.0, np.divide((r[1:] * both).sum(axis=1), counts, out=np.zeros(len(counts)),
                                    where=counts > 0)]
    mean[0] = 0.0
    return np.cumprod(1.0 + mean)
