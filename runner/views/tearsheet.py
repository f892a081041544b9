"""A run's tearsheet: one self-contained HTML page (no script, style sheet or font from the network; the figure is
an embedded PNG) that MLflow's artifact viewer opens offline. Built from a backtest result, saving nothing.

Per segment: the metrics with their units (``runner.engine.metric_docs``), monthly returns as a heatmap and yearly
returns beside buy and hold's, the five worst drawdowns (start, trough, recovery, depth, length) and trade
statistics; one figure over all bars: equity on a log axis against buy and hold, underwater, and the rolling Sharpe
ratio and volatility over ``ROLLING_BARS`` bars; a walk-forward run's folds and a CPCV run's path distribution.

Why matplotlib: it is installed already, renders offline with no script, and one 4-panel PNG is ~100 kB and ~0.3 s;
plotly would inline its 4.6 MB script into every run's artifact, and quantstats' HTML report fetches nothing but
computes its own metrics on calendar days and would repeat, differently, what the engine logs per segment.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from runner.engine.metric_docs import SEGMENT

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from runner.engine.backtest import BacktestResult

ROLLING_BARS = 63  # the rolling window: about a quarter of daily bars
WORST_DRAWDOWNS = 5
SHOWN = ("total_return", "cagr", "annual_volatility", "sharpe_ratio", "sortino_ratio", "max_drawdown", "calmar_ratio",
         "alpha", "beta", "information_ratio", "value_at_risk", "conditional_value_at_risk", "benchmark_total_return",
         "benchmark_sharpe_ratio", "excess_return", "exposure", "turnover", "num_trades", "win_rate", "profit_factor",
         "expectancy", "psr", "num_bars")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}h2{border-bottom:2px solid #ccc;padding-bottom:3px}.note{color:#666;font-size:12px}"""


def segment_returns(result: BacktestResult, start: int, stop: int) -> tuple[pd.Series, pd.Series]:
    """The segment's per-bar strategy and buy-and-hold returns, dated (the book's first bar has none): buy and hold's
    from ``close``, the traded level (a universe's equal-weight index)."""
    index = result.index[start:stop]
    strategy = pd.Series(result.strategy_returns[start:stop], index=index, dtype=float).dropna()
    close = np.asarray(result.close, dtype=float)
    level = pd.Series(close[max(start - 1, 0):stop], index=result.index[max(start - 1, 0):stop])
    return strategy, level.pct_change().reindex(strategy.index)


def calendar_returns(returns: pd.Series, frequency: str) -> pd.Series:
    """Compounded returns per calendar month (``ME``) or year (``YE``)."""
    return (1.0 + returns).groupby(returns.index.to_period(frequency[0])).prod() - 1.0


def worst_drawdowns(equity: pd.Series, count: int = WORST_DRAWDOWNS) -> pd.DataFrame:
    """The ``count`` deepest falls from a running peak: start (the peak), trough, recovery (back at the peak; blank
    when not recovered in the segment), depth (a fraction) and length in bars (peak to recovery, or to the end)."""
    peak = equity.cummax()
    under = (equity < peak).to_numpy()
    rows = []
    i, n = 0, len(equity)
    while i < n:
        if not under[i]:
            i += 1
            continue
        start = i - 1 if i > 0 else 0
        end = i
        while end < n and under[end]:
            end += 1
        stretch = equity.iloc[i:end]
        trough = int(np.argmin(stretch.to_numpy())) + i
        depth = 1.0 - equity.iloc[trough] / peak.iloc[trough]
        rows.append({"start": equity.index[start], "trough": equity.index[trough],
                     "recovery": equity.index[end] if end < n else None, "depth": depth,
                     "bars": (end if end < n else n - 1) - start})
        i = end
    frame = pd.DataFrame(rows, columns=["start", "trough", "recovery", "depth", "bars"])
    frame = frame.sort_values("depth", ascending=False).head(count).reset_index(drop=True)
    frame.index += 1  # rank 1: the deepest
    return frame


def trade_statistics(trades: pd.DataFrame, start: int, stop: int) -> dict[str, float]:
    """Round trips closed in the segment: count, best, worst, mean return and mean bars held."""
    if trades is None or not len(trades):
        return {"closed": 0.0}
    exits = trades["exit_bar"].to_numpy()
    closed = trades[~trades["is_open"].to_numpy(dtype=bool) & (exits >= start) & (exits < stop)]
    if not len(closed):
        return {"closed": 0.0}
    returns = closed["return"].to_numpy(dtype=float)
    return {"closed": float(len(closed)), "best": float(returns.max()), "worst": float(returns.min()),
            "mean": float(returns.mean()), "mean bars held": float(closed["bars_held"].to_numpy(dtype=float).mean())}


def _number(value: object, fraction: bool = False) -> str:
    if value is None or value is pd.NaT or isinstance(value, float) and not math.isfinite(value):
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (pd.Timestamp, pd.Period)):
        return str(value.date()) if isinstance(value, pd.Timestamp) else str(value)
    if isinstance(value, (int, np.integer)) or isinstance(value, float) and value.is_integer() and not fraction:
        return f"{int(value):,}"
    return f"{value:.2%}" if fraction else f"{value:,.4f}"


def _table(frame: pd.DataFrame, fractions: tuple[str, ...] = (), index: bool = True) -> str:
    head = ([f"<th class=l>{html.escape(str(frame.index.name or ''))}</th>"] if index else []) + [
        f"<th>{html.escape(str(c))}</th>" for c in frame.columns]
    rows = []
    for label, row in frame.iterrows():
        cells = [f"<td class=l>{html.escape(_number(label))}</td>"] if index else []
        cells += [f"<td>{_number(v, c in fractions)}</td>" for c, v in row.items()]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{''.join(head)}</tr>{''.join(rows)}</table>"


def heatmap(monthly: pd.Series, yearly: pd.Series, benchmark_yearly: pd.Series) -> str:
    """Monthly returns, a year a row (green gains, red losses, deeper for larger), then the year's and buy and
    hold's."""
    scale = max(float(monthly.abs().max()), 1e-12) if len(monthly) else 1.0
    rows = []
    for year in sorted({p.year for p in monthly.index}):
        cells = []
        for month in range(1, 13):
            value = monthly.get(pd.Period(year=year, month=month, freq="M"))
            if value is None or not np.isfinite(value):
                cells.append("<td></td>")
                continue
            alpha = min(1.0, abs(value) / scale) * 0.6
            colour = f"rgba(26,150,65,{alpha:.2f})" if value >= 0 else f"rgba(215,48,39,{alpha:.2f})"
            cells.append(f'<td style="background:{colour}">{value:.1%}</td>')
        period = pd.Period(year=year, freq="Y")
        cells += [f"<td><b>{_number(yearly.get(period), True)}</b></td>",
                  f"<td>{_number(benchmark_yearly.get(period), True)}</td>"]
        rows.append(f"<tr><td class=l>{year}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>{m}</th>" for m in MONTHS)
    return f"<table><tr><th class=l>year</th>{head}<th>year</th><th>buy &amp; hold</th></tr>{''.join(rows)}</table>"


def figure_png(result: BacktestResult, periods_per_year: float, title: str) -> str:
    """Equity (log axis) against buy and hold per segment, underwater, rolling Sharpe and volatility: a base64 PNG."""
    from matplotlib.lines import Line2D

    from runner.views.figures import (
        BENCHMARK,
        DRAW_COLUMNS,
        DRAWDOWN,
        SEGMENT_COLOURS,
        STRATEGY,
        new_figure,
        reduce_for_drawing,
        time_axis,
    )

    fig = new_figure(11, 8)
    axes = fig.subplots(4, 1, gridspec_kw={"height_ratios": [3, 1.2, 1.2, 1.2], "hspace": 0.12})
    x, ticks, labels = time_axis(result.index)
    window = ROLLING_BARS
    for name, (start, stop) in result.bounds.items():
        if stop <= start:
            continue
        for ax in axes:
            ax.axvspan(x[start], x[stop - 1], color=SEGMENT_COLOURS.get(name, "#f7f7f7"), zorder=0)
        axes[0].text(x[start], 0.97, f" {name}", transform=axes[0].get_xaxis_transform(), va="top", fontsize=9)
        columns = max(2, DRAW_COLUMNS * (stop - start) // len(x))  # long curves reduced per pixel column

        def draw(ax: Axes, values: np.ndarray, colour: str, lw: float = 0.9, start: int = start, stop: int = stop,
                 columns: int = columns) -> None:
            ax.plot(*reduce_for_drawing(x[start:stop], np.asarray(values, dtype=float), columns), color=colour, lw=lw)

        draw(axes[0], result.equity[start:stop], STRATEGY, 1.0)
        draw(axes[0], result.benchmark_equity[start:stop], BENCHMARK, 0.8)
        axes[1].fill_between(*reduce_for_drawing(x[start:stop], -result.drawdown[start:stop], columns), 0,
                             color=DRAWDOWN, alpha=0.5, lw=0)
        rolling = pd.Series(result.strategy_returns[start:stop]).rolling(window, min_periods=window)
        std = rolling.std()
        draw(axes[2], (rolling.mean() / std.where(std > 0) * math.sqrt(periods_per_year)).to_numpy(), STRATEGY)
        draw(axes[3], (std * math.sqrt(periods_per_year)).to_numpy(), STRATEGY)
    curves = np.r_[result.equity, result.benchmark_equity]
    if np.isfinite(curves).any() and np.nanmin(curves) > 0:
        axes[0].set_yscale("log")
    axes[0].set_title(title)
    axes[0].legend([Line2D([], [], color=STRATEGY), Line2D([], [], color=BENCHMARK)], ["strategy", "buy & hold"],
                   loc="lower left", fontsize=8)
    for ax, label in zip(axes, ("equity (log)", "underwater", f"Sharpe, {window} bars", f"volatility, {window} bars"),
                         strict=True):
        ax.set_ylabel(label, fontsize=9)
        if len(x):
            ax.set_xlim(x[0], x[-1])
    axes[2].axhline(0, color="black", lw=0.5)
    for ax in axes[:-1]:
        ax.set_xticks([])
    if ticks:
        axes[-1].set_xticks(ticks, labels)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.05)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()


def tearsheet_html(result: BacktestResult, title: str, periods_per_year: float,
                   folds: pd.DataFrame | None = None, distribution: dict[str, float] | None = None) -> str:
    """The whole page. ``folds``: a walk-forward run's folds table; ``distribution``: a CPCV run's metric
    distribution over its paths (the result is then its first path)."""
    segments = [name for name, (start, stop) in result.bounds.items() if stop > start]
    metrics = pd.DataFrame({s: {m: result.metrics.get(s, {}).get(m, math.nan) for m in SHOWN} for s in segments})
    metrics.index.name = "metric"
    metrics.insert(0, "unit", [SEGMENT[m][1] if m in SEGMENT else "" for m in metrics.index])
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p class=note>Segments: {', '.join(segments)}. Metrics as logged (units: python -m runner.report "
             f"--metrics); rolling statistics over {ROLLING_BARS} bars, annualised with {periods_per_year:g} bars a "
             "year.</p>", _metrics_table(metrics),
             f'<img alt="equity, underwater, rolling Sharpe and volatility" style="max-width:100%" '
             f'src="data:image/png;base64,{figure_png(result, periods_per_year, title)}">']
    if distribution:
        frame = pd.DataFrame({"value": distribution}).rename_axis("cpcv metric")
        parts += ["<h2>CPCV: the distribution over the paths</h2>", "<p class=note>The figure and the segment tables "
                  "show the first path.</p>", _table(frame)]
    if folds is not None and len(folds):
        parts += ["<h2>Walk-forward folds</h2>", _table(folds.set_index(folds.columns[0]))]
    for segment in segments:
        start, stop = result.bounds[segment]
        strategy, benchmark = segment_returns(result, start, stop)
        parts.append(f"<h2>{html.escape(segment)}: {_number(result.index[start])} to "
                     f"{_number(result.index[stop - 1])}</h2>")
        if isinstance(result.index, pd.DatetimeIndex) and len(strategy):
            parts += ["<h3>Monthly and yearly returns</h3>",
                      heatmap(calendar_returns(strategy, "ME"), calendar_returns(strategy, "YE"),
                              calendar_returns(benchmark.fillna(0.0), "YE"))]
        equity = pd.Series(result.equity[start:stop], index=result.index[start:stop])
        parts += [f"<h3>The {WORST_DRAWDOWNS} worst drawdowns</h3>",
                  _table(worst_drawdowns(equity).rename_axis("rank"), fractions=("depth",))]
        stats = trade_statistics(result.trades, start, stop)
        parts += ["<h3>Trades (round trips closed in the segment)</h3>",
                  _table(pd.DataFrame({"value": stats}).rename_axis("statistic").T, fractions=("best", "worst", "mean"),
                         index=False)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _metrics_table(metrics: pd.DataFrame) -> str:
    """Fractions as percentages where the unit says so, the rest as numbers."""
    percent = {m for m in metrics.index if SEGMENT.get(m, ("", ""))[1].startswith("fraction")}
    rows = []
    for name, row in metrics.iterrows():
        cells = [f"<td>{_number(v, name in percent)}</td>" for v in row.iloc[1:]]
        rows.append(f"<tr><td class=l>{name}</td><td class=l>{html.escape(row.iloc[0])}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in metrics.columns[1:])
    return f"<table><tr><th class=l>metric</th><th class=l>unit</th>{head}</tr>{''.join(rows)}</table>"
