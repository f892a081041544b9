"""Fills and closed round trips derived from target weights (pure numpy/pandas, vectorised).

A round trip is a maximal run of bars whose weight keeps one sign; it opens at the close where the sign
appears and closes at the close where it ends (back to flat, or flipped). Its return compounds, over
the bars it covers, the held position's price return less the cost of each trade that belongs to it: at a
flip the cost of closing goes to the old trade and the cost of opening to the new one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRADE_COLUMNS = ["direction", "entry_time", "exit_time", "entry_bar", "exit_bar", "entry_price",
                 "exit_price", "weight", "bars_held", "return", "pnl", "is_open"]
DIRECTION = pd.CategoricalDtype(["long", "short"])
SIDE = pd.CategoricalDtype(["buy", "sell"])
FILL_COLUMNS = ["timestamp", "bar", "side", "weight_before", "weight_after", "weight_change", "price", "cost"]


def fills_table(weights: np.ndarray, close: np.ndarray, turnover: np.ndarray, cost_rate: float,
                index: pd.Index) -> pd.DataFrame:
    """One row per bar where the target weight changes (traded at that bar's close)."""
    bars = np.flatnonzero(turnover > 0)
    before = np.where(bars > 0, weights[np.maximum(bars - 1, 0)], 0.0)
    after = weights[bars]
    return pd.DataFrame({
        "timestamp": index[bars], "bar": bars,
        "side": pd.Categorical.from_codes((after < before).astype(np.int8), dtype=SIDE),
        "weight_before": before, "weight_after": after, "weight_change": after - before,
        "price": close[bars], "cost": cost_rate * turnover[bars],  # fraction of equity paid at that close
    }, columns=FILL_COLUMNS)


def round_trips(weights: np.ndarray, close: np.ndarray, strategy_returns: np.ndarray, turnover: np.ndarray,
                cost_rate: float, index: pd.Index, equity: np.ndarray) -> pd.DataFrame:
    """Round trips with entry/exit time and price, return, pnl and bars held; the last may be open.

    ``strategy_returns`` are net of all of each bar's costs; ``equity`` is the per-bar equity curve, whose
    value at the entry bar sizes the trade's pnl.
    """
    n = len(weights)
    long, short = weights > 0, weights < 0
    changed = (long[1:] != long[:-1]) | (short[1:] != short[:-1])
    changes = np.flatnonzero(changed) + 1  # bars whose side differs from the bar before
    if long[0] or short[0]:
        changes = np.concatenate([[0], changes])
    entries = changes[weights[changes] != 0]
    if len(entries) == 0:
        return pd.DataFrame(columns=TRADE_COLUMNS)
    ends = changes[(changes > 0) & (weights[changes - 1] != 0)]  # bars that close the trade before them
    exits = np.concatenate([ends, [n]]) if len(ends) < len(entries) else ends
    is_open = exits >= n
    growth = np.concatenate([[1.0], 1.0 + strategy_returns[1:]])
    # Bars entry+1 .. exit carry the trade's price moves. At the exit bar only the cost of closing this
    # trade counts (at a flip, the opening cost belongs to the next trade); the entry cost is paid once.
    closed_exits = exits[~is_open]
    trade_growth = growth.copy()
    trade_growth[closed_exits] += cost_rate * (turnover[closed_exits] - np.abs(weights[closed_exits - 1]))
    edges = np.empty(2 * len(entries), dtype=np.intp)
    edges[0::2], edges[1::2] = entries + 1, exits + 1
    valid = int(np.searchsorted(edges, n))  # reduceat runs the last range that starts below n to the end
    products = np.ones(len(entries))
    if valid:
        products[: (valid + 1) // 2] = np.multiply.reduceat(trade_growth, edges[:valid])[0::2]
    last = np.minimum(exits, n - 1)
    # The entry bar's factor split exactly between the closing and the opening trade: the new trade's
    # share is growth[e] / (growth[e] + c|w[e]|), which is 1 - c|w[e]| when entering from flat. Bar 0
    # has no return (s[0] undefined): a trade opened there pays its entry cost, 1 - c|w[0]|, as the equity does.
    entry_growth = growth[entries]
    entry_factor = entry_growth / (entry_growth + cost_rate * np.abs(weights[entries]))
    entry_factor[entries == 0] = 1.0 - cost_rate * abs(weights[0])
    returns = products * entry_factor - 1.0
    pnl = returns * np.abs(weights[entries]) * equity[entries]
    return pd.DataFrame({
        "direction": pd.Categorical.from_codes((weights[entries] < 0).astype(np.int8), dtype=DIRECTION),
        "entry_time": index[entries], "exit_time": index[last], "entry_bar": entries,
        "exit_bar": last, "entry_price": close[entries], "exit_price": close[last],
        "weight": weights[entries], "bars_held": last - entries, "return": returns, "pnl": pnl,
        "is_open": is_open,
    }, columns=TRADE_COLUMNS)
