"""Figures (built, never saved here): equity vs benchmark with segments, drawdown, weights; training.

Curves longer than a figure has pixel columns are reduced before matplotlib sees them
(``reduce_for_drawing``), so a million-bar run draws as fast as a short one and looks the same.

Figures are plain ``matplotlib.figure.Figure`` objects, not pyplot's: nothing to close, no global state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # annotations only: figures sit below the evaluation layer that produces an outcome
    from matplotlib.figure import Figure

    from runner.engine.backtest import BacktestResult
    from runner.evaluation.outcome import Outcome, Prepared

DRAW_COLUMNS = 2000  # points per curve kept for drawing: ~2x the pixel columns of an 11-inch figure at 90 dpi
SEGMENT_COLOURS = {"train": "#f2f2f2", "val": "#e3eefc", "test": "#fdeee0"}
STRATEGY, BENCHMARK, DRAWDOWN, WEIGHT = "tab:blue", "tab:orange", "tab:red", "tab:green"
WEIGHT_WINDOW = 21  # bars: the weight panel's mean line (about a month of daily bars)


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def reduce_for_drawing(x: np.ndarray, y: np.ndarray, columns: int = DRAW_COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """The points a line through (x, y) needs at ``columns`` columns of resolution: per column, its first,
    last, lowest and highest point, in order (the M4 reduction). A drawn column spans the same vertical
    range either way, so drawdowns and spikes stay visible and the global minimum and maximum are kept."""
    n = len(y)
    if n <= 4 * columns:
        return x, y
    column = np.arange(n, dtype=np.int64) * columns // n
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
    sizes = np.diff(np.r_[starts, n])
    keep = [starts, starts + sizes - 1]
    for reduce in (np.fmin, np.fmax):  # NaN-skipping
        extreme = np.repeat(reduce.reduceat(y, starts), sizes)
        hits = np.flatnonzero(y == extreme)
        _, first = np.unique(column[hits], return_index=True)
        keep.append(hits[first])
    rows = np.unique(np.concatenate(keep))
    return x[rows], y[rows]


def time_axis(index: Any) -> tuple[np.ndarray, list[float], list[str]]:
    """x positions for a bar index and fixed ticks: dates become day numbers, ticked by year (every k-th,
    at most ~10), or by matplotlib's own choice for spans under two years; other indexes plot by bar number."""
    import pandas as pd

    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return np.arange(len(index), dtype=float), [], []
    from matplotlib import dates

    naive = index.tz_localize(None) if index.tz is not None else index
    x = np.asarray(dates.date2num(naive), dtype=float)
    first, last = naive[0], naive[-1]
    if last.year - first.year >= 2:
        step = max(1, int(np.ceil((last.year - first.year) / 10)))
        starts = pd.DatetimeIndex([pd.Timestamp(year=y, month=1, day=1) for y in range(first.year + 1, last.year + 1,
                                                                                         step)])
        return x, [float(v) for v in dates.date2num(starts)], [str(y) for y in starts.year]
    locator = dates.AutoDateLocator()
    ticks = [float(t) for t in locator.tick_values(first.to_pydatetime(), last.to_pydatetime()) if x[0] <= t <= x[-1]]
    return x, ticks, list(dates.ConciseDateFormatter(locator).format_ticks(ticks))


def equity_figure(result: BacktestResult, title: str = "") -> Figure:
    """Equity vs buy & hold per segment (each restarts at initial capital), drawdown, and weights.

    The three panels share one x range without matplotlib's shared axes: only the bottom one carries x
    ticks (shared axes would build hidden ticks on every panel, the bulk of a figure's drawing time)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(11, 7.5)
    ax_eq, ax_dd, ax_w = fig.subplots(3, 1, gridspec_kw={"height_ratios": [3, 1.2, 1], "hspace": 0.08})
    x, ticks, labels = time_axis(result.index)
    for name, (start, stop) in result.bounds.items():
        if stop <= start:
            continue
        for ax in (ax_eq, ax_dd, ax_w):
            ax.axvspan(x[start], x[stop - 1], color=SEGMENT_COLOURS[name], zorder=0)
        ax_eq.text(x[start], 0.97, f" {name}", transform=ax_eq.get_xaxis_transform(), va="top", fontsize=9)
        # each segment restarts at initial_capital: drawn apart, never joined; long curves reduced per column
        columns = max(2, DRAW_COLUMNS * (stop - start) // len(x))
        ax_eq.plot(*reduce_for_drawing(x[start:stop], result.equity[start:stop], columns), color=STRATEGY, lw=1.1)
        ax_eq.plot(*reduce_for_drawing(x[start:stop], result.benchmark_equity[start:stop], columns), color=BENCHMARK,
                   lw=0.9, alpha=0.8)
    universe = getattr(result, "symbols", None) is not None
    ax_eq.legend([Line2D([], [], color=STRATEGY, lw=1.1), Line2D([], [], color=BENCHMARK, lw=0.9)],
                 ["strategy", "equal weight (every bar)" if universe else "buy & hold"], loc="lower left")
    x_dd, drawdown = reduce_for_drawing(x, result.drawdown)
    ax_dd.fill_between(x_dd, -drawdown, 0, color=DRAWDOWN, alpha=0.5, lw=0)
    # a light area for the weight itself and, over it, its 21-bar mean: a weight that flips every few bars reads
    # as how much of the month the book was in the market, not as a barcode
    x_w, weights = reduce_for_drawing(x, result.weights)
    ax_w.fill_between(x_w, weights, 0, step="post", color=WEIGHT, alpha=0.25, lw=0)
    smooth = pd.Series(np.asarray(result.weights, dtype=float)).rolling(WEIGHT_WINDOW, min_periods=1).mean()
    ax_w.plot(*reduce_for_drawing(x, smooth.to_numpy()), color=WEIGHT, lw=1.0)
    ax_w.axhline(0, color="black", lw=0.5)
    ax_eq.set_title(title)
    curves = np.r_[result.equity, result.benchmark_equity]
    curves = curves[np.isfinite(curves) & (curves > 0)]
    log_axis = len(curves) > 0 and curves.max() / curves.min() > 2  # growth to 3x would flatten the other segments
    if log_axis:
        from matplotlib.ticker import FuncFormatter

        ax_eq.set_yscale("log")
        for axis in (ax_eq.yaxis.set_major_formatter, ax_eq.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax_eq.set_ylabel("equity (restarts per segment" + (", log scale)" if log_axis else ")"))
    ax_dd.set_ylabel("drawdown")
    ax_w.set_ylabel(("gross exposure" if universe else "weight") + f"\n(line: {WEIGHT_WINDOW}-bar mean)")
    for ax in (ax_dd, ax_w):
        ax.yaxis.set_major_locator(MaxNLocator(3))
    for ax in (ax_eq, ax_dd):
        ax.set_xticks([])
    if ticks:
        ax_w.set_xticks(ticks, labels)
    if len(x):
        for ax in (ax_eq, ax_dd, ax_w):
            ax.set_xlim(x[0], x[-1])
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.06)
    return fig


def weights_figure(result: BacktestResult, title: str = "", named: int = 8) -> Figure:
    """A universe's weights over time as stacked areas (longs above zero, shorts below): the ``named`` assets
    with the largest mean |weight| by name, the rest summed as "others"; at most ``DRAW_COLUMNS`` bars drawn
    (evenly spaced: areas have no spikes to keep)."""
    weights, symbols = result.asset_weights, list(result.symbols)
    order = np.argsort(-np.abs(weights).mean(axis=0), kind="stable")
    top = order[:named]
    step = max(1, len(weights) // DRAW_COLUMNS)
    x, ticks, labels = time_axis(result.index)
    x, shown = x[::step], weights[::step]
    layers = [shown[:, i] for i in top]
    names = [symbols[i] for i in top]
    if len(order) > named:
        layers.append(shown[:, order[named:]].sum(axis=1))
        names.append(f"{len(order) - named} others")
    fig = new_figure(11, 4.5)
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(layers))]
    longs = [np.clip(layer, 0, None) for layer in layers]
    ax.stackplot(x, longs, labels=names, colors=colours, alpha=0.85, lw=0)
    if any((layer < 0).any() for layer in layers):
        ax.stackplot(x, [np.clip(layer, None, 0) for layer in layers], colors=colours, alpha=0.85, lw=0)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("weight (share of equity)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if ticks:
        ax.set_xticks(ticks, labels)
    if len(x):
        ax.set_xlim(x[0], x[-1])
    fig.subplots_adjust(left=0.07, right=0.86, top=0.92, bottom=0.1)
    return fig


def training_figure(histories: list[dict[str, list[float]]], best_epoch: int, unit: str = "fold") -> Figure:
    """Loss by epoch: one model's train and val loss, or each ``unit``'s (walk-forward's folds, CPCV's splits);
    the dashed line marks the best epoch of the last (logged) model. Past 8 models, only the first 8 are named."""
    fig = new_figure(6, 3.5)
    ax = fig.subplots()
    many = len(histories) > 1
    for number, history in enumerate(histories):
        for key, values in history.items():
            style = {"color": f"C{number % 10}", "ls": "-" if key == "val_loss" else ":"} if many else {}
            named = many and number < 8 and (key == "val_loss" or number == 0)
            label = f"{unit} {number} {key}" if named else None if many else key
            ax.plot(range(len(values)), values, label=label, marker="o", ms=3, **style)
    ax.axvline(best_epoch, color="grey", ls="--", lw=0.8, label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled target)")
    ax.legend(fontsize=7 if many else None)
    fig.subplots_adjust(left=0.14, right=0.97, top=0.95, bottom=0.14)
    return fig


def sharpe_bars(ax: Any, sharpes: list[float] | np.ndarray, unit: str) -> None:
    """One bar per fold or path (red below 0), labelled ``{unit} {i}``."""
    values = np.nan_to_num(np.asarray(sharpes, dtype=float))
    ax.bar(range(len(values)), values, color=[STRATEGY if v >= 0 else DRAWDOWN for v in values])
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(values)), [f"{unit} {i}" for i in range(len(values))])


def walk_forward_figure(oos: BacktestResult, boundaries: list[int], fold_sharpes: list[float], title: str = "",
                        offset: int = 1) -> Figure:
    """The stitched out-of-sample equity against buy & hold with the folds marked, and each fold's test Sharpe.

    ``oos``: the stitched backtest (its first ``offset`` bars precede the record); ``boundaries``: each fold's
    first bar in the record, plus one."""
    from matplotlib.lines import Line2D

    fig = new_figure(11, 6.5)
    ax_eq, ax_sr = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1.3], "hspace": 0.35})
    x, ticks, labels = time_axis(oos.index)
    x, equity, benchmark = x[offset:], oos.equity[offset:], oos.benchmark_equity[offset:]
    ax_eq.plot(*reduce_for_drawing(x, equity), color=STRATEGY, lw=1.1)
    ax_eq.plot(*reduce_for_drawing(x, benchmark), color=BENCHMARK, lw=0.9, alpha=0.8)
    for number, start in enumerate(boundaries):
        ax_eq.axvline(x[start - 1], color="grey", lw=0.7, ls="--")
        ax_eq.text(x[start - 1], 0.97, f" fold {number}", transform=ax_eq.get_xaxis_transform(), va="top", fontsize=8)
    ax_eq.legend([Line2D([], [], color=STRATEGY, lw=1.1), Line2D([], [], color=BENCHMARK, lw=0.9)],
                 ["strategy (stitched out of sample)", "buy & hold"], loc="lower left")
    ax_eq.set_title(title)
    ax_eq.set_ylabel("equity")
    if ticks:
        ax_eq.set_xticks(ticks, labels)
    ax_eq.set_xlim(x[0], x[-1])
    sharpe_bars(ax_sr, fold_sharpes, "fold")
    ax_sr.set_ylabel("test Sharpe")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.07)
    return fig


def cpcv_figure(paths: list[BacktestResult], sharpes: list[float], title: str = "") -> Figure:
    """Every CPCV path's equity against buy & hold, and the distribution of the paths' Sharpe ratios."""
    from matplotlib.lines import Line2D

    fig = new_figure(11, 6.5)
    ax_eq, ax_sr = fig.subplots(2, 1, gridspec_kw={"height_ratios": [3, 1.3], "hspace": 0.35})
    x, ticks, labels = time_axis(paths[0].index)
    for path in paths:
        ax_eq.plot(*reduce_for_drawing(x, path.equity), color=STRATEGY, lw=0.8, alpha=0.5)
    ax_eq.plot(*reduce_for_drawing(x, paths[0].benchmark_equity), color=BENCHMARK, lw=0.9, alpha=0.8)
    ax_eq.legend([Line2D([], [], color=STRATEGY, lw=0.8), Line2D([], [], color=BENCHMARK, lw=0.9)],
                 [f"strategy ({len(paths)} out-of-sample paths)", "buy & hold"], loc="lower left")
    ax_eq.set_title(title)
    ax_eq.set_ylabel("equity")
    if ticks:
        ax_eq.set_xticks(ticks, labels)
    ax_eq.set_xlim(x[0], x[-1])
    values = np.asarray(sharpes, dtype=float)
    finite = values[np.isfinite(values)]
    if len(values) <= 20:  # a few paths: one bar each, the mean dashed
        sharpe_bars(ax_sr, values, "path")
        if len(finite):
            ax_sr.axhline(float(finite.mean()), color="black", lw=0.8, ls="--")
        ax_sr.set_ylabel("Sharpe (dashed: mean)")
    else:  # many: their distribution
        ax_sr.hist(finite, bins=min(30, max(5, len(finite) // 3)), color=STRATEGY)
        if len(finite):
            ax_sr.axvline(float(finite.mean()), color="black", lw=0.8, ls="--")
        ax_sr.set_xlabel("path Sharpe ratio (dashed: mean)")
        ax_sr.set_ylabel("paths")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.08)
    return fig


def figure_title(prepared: Prepared) -> str:
    """``Momentum with MLPForecaster on sp500 (4 assets)``: the strategy, the model when there is one, the data."""
    target = prepared.config.model.get("_target_")
    model = f" with {target.rsplit('.', 1)[-1]}" if target else ""
    return (f"{type(prepared.strategy).__name__}{model} on {prepared.data_name}"
            + ("" if prepared.book.series else f" ({prepared.book.n_assets} assets)"))


def run_figures(prepared: Prepared, outcome: Outcome) -> dict[str, Figure]:
    """A run's figures by file name, built from its outcome (``runner.evaluation.experiment``): the equity (or the
    walk-forward record), a universe's weights, and the training curves when a model trained."""
    walk = outcome.walk
    title = figure_title(prepared)
    figures = {}
    if outcome.cpcv is not None:
        figures["cpcv.png"] = cpcv_figure(outcome.cpcv.paths, outcome.cpcv.path_metrics["sharpe_ratio"], title)
    elif walk is not None:
        figures["walk_forward.png"] = walk_forward_figure(
            walk.oos, [f.test_start - walk.folds[0].test_start + 1 for f in walk.folds],
            walk.fold_metrics["sharpe_ratio"], title, walk.offset)
    else:
        figures["equity.png"] = equity_figure(outcome.result, title=title)
    if outcome.result.symbols is not None:
        figures["weights.png"] = weights_figure(outcome.result, title=f"{title}: weights")
    if outcome.training is not None:
        trainings = walk.trainings if walk is not None else outcome.cpcv.trainings if outcome.cpcv else None
        histories = [t.history for t in trainings] if trainings else [outcome.training.history]
        figures["training.png"] = training_figure(histories, outcome.training.best_epoch,
                                                  "split" if outcome.cpcv is not None else "fold")
    return figures
