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
                cost_rate: float | np.ndarray, index: pd.Index, equity: np.ndarray) -> pd.DataFrame:
    """Round trips with entry/exit time and price, return, pnl and bars held; the last may be open.

    ``strategy_returns`` are net of all of each bar's costs; ``equity`` is the per-bar equity curve, whose
    value at the entry bar sizes the trade's pnl; ``cost_rate`` is one rate, or one per bar.
    """
    n = len(weights)
    rate = np.broadcast_to(np.asarray(cost_rate, dtype=np.float64), (n,))
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
    trade_growth[closed_exits] += rate[closed_exits] * (turnover[closed_exits] - np.abs(weights[closed_exits - 1]))
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
    entry_factor = entry_growth / (entry_growth + rate[entries] * np.abs(weights[entries]))
    entry_factor[entries == 0] = 1.0 - rate[0] * abs(weights[0])
    returns = products * entry_factor - 1.0
    pnl = returns * np.abs(weights[entries]) * equity[entries]
    return pd.DataFrame({
        "direction": pd.Categorical.from_codes((weights[entries] < 0).astype(np.int8), dtype=DIRECTION),
        "entry_time": index[entries], "exit_time": index[last], "entry_bar": entries,
        "exit_bar": last, "entry_price": close[entries], "exit_price": close[last],
        "weight": weights[entries], "bars_held": last - entries, "return": returns, "pnl": pnl,
        "is_open": is_open,
    }, columns=TRADE_COLUMNS)


def portfolio_round_trips(weights: np.ndarray, price: np.ndarray, costs: np.ndarray, index: pd.Index,
                          equity: np.ndarray, symbols: list[str]) -> pd.DataFrame:
    """Each asset's round trips (``symbol`` first), a trade being a run of bars on one side as for one series.

    A trade's ``return`` is what one unit of the asset bought (or sold short) at the entry close and closed at
    the exit close earns, net of its entry and exit cost: ``(1-c)(P_exit/P_entry)(1-c) - 1`` long,
    ``(1-c)(2 - P_exit/P_entry)(1-c) - 1`` short; an open trade is marked at the last close and pays only its
    entry cost. (The engine's own accounting charges a cost on the equity before the bar, ``s[t]``; the two
    differ by ``c*r`` at the exit bar, under 1e-5 at 5 bp.) ``pnl`` sizes the return by the entry weight and
    the equity then. ``price`` has no gaps (an asset's last price is kept). Sparse work only: the dense
    passes are the side of each weight and where it changes."""
    n, m = weights.shape
    side = np.ascontiguousarray(((weights > 0).view(np.int8) - (weights < 0).view(np.int8)).T)  # asset by asset
    changed = np.empty((m, n), dtype=bool)
    np.not_equal(side[:, 0], 0, out=changed[:, 0])
    np.not_equal(side[:, 1:], side[:, :-1], out=changed[:, 1:])
    cells = np.flatnonzero(changed)  # sparse from here on: a side appears (entry) or ends (exit) there, in order
    assets, bars = np.divmod(cells, n)
    flat = side.ravel()
    opens = flat[cells] != 0
    ends = (bars > 0) & (flat[np.maximum(cells - 1, 0)] != 0)
    entry_bar, asset = bars[opens], assets[opens]
    if not len(entry_bar):
        return pd.DataFrame(columns=["symbol", *TRADE_COLUMNS])
    exit_key = cells[ends] + assets[ends]  # asset * (n + 1) + bar, as the entries' keys below
    found = np.searchsorted(exit_key, asset * (n + 1) + entry_bar, side="right")
    closes = np.full(len(entry_bar), n - 1)
    is_open = found >= len(exit_key)
    matched = np.flatnonzero(~is_open)
    same_asset = exit_key[found[matched]] // (n + 1) == asset[matched]
    closes[matched[same_asset]] = exit_key[found[matched[same_asset]]] % (n + 1)
    is_open[matched[~same_asset]] = True
    direction = side[asset, entry_bar]
    ratio = price[closes, asset] / price[entry_bar, asset]
    rate = costs[asset]
    returns = (1.0 - rate) * np.where(direction > 0, ratio, 2.0 - ratio) * np.where(is_open, 1.0, 1.0 - rate) - 1.0
    entry_weight = weights[entry_bar, asset]
    return pd.DataFrame({
        "symbol": pd.Categorical.from_codes(asset, categories=symbols),
        "direction": pd.Categorical.from_codes((direction < 0).astype(np.int8), dtype=DIRECTION),
        "entry_time": index[entry_bar], "exit_time": index[closes], "entry_bar": entry_bar, "exit_bar": closes,
        "entry_price": price[entry_bar, asset], "exit_price": price[closes, asset], "weight": entry_weight,
        "bars_held": closes - entry_bar, "return": returns, "pnl": returns * np.abs(entry_weight) * equity[entry_bar],
        "is_open": is_open,
    }, columns=["symbol", *TRADE_COLUMNS], copy=False)


def portfolio_fills(weights: np.ndarray, held: np.ndarray | None, turnover: np.ndarray, price: np.ndarray,
                    costs: np.ndarray, index: pd.Index, symbols: list[str]) -> pd.DataFrame:
    """One row per asset and bar where the book trades: from the weight held before (the previous bar's, or
    the drifted one when ``held`` is given) to the target."""
    bars, assets = np.divmod(np.flatnonzero(turnover != 0), turnover.shape[1])  # a bool mask: ~5x faster
    after = weights[bars, assets]
    if held is not None:
        before = held[bars, assets]
    else:
        before = np.where(bars > 0, weights[np.maximum(bars - 1, 0), assets], 0.0)
    return pd.DataFrame({
        "timestamp": index[bars], "bar": bars, "symbol": pd.Categorical.from_codes(assets, categories=symbols),
        "side": pd.Categorical.from_codes((after < before).astype(np.int8), dtype=SIDE),
        "weight_before": before, "weight_after": after, "weight_change": after - before,
        "price": price[bars, assets], "cost": costs[assets] * turnover[bars, assets],
    }, columns=["timestamp", "bar", "symbol", *FILL_COLUMNS[2:]], copy=False)
