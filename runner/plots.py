"""Figures (built, never saved here): equity vs benchmark with segments, drawdown, weights; training.

Figures are plain ``matplotlib.figure.Figure`` objects, not pyplot's: nothing to close, no global state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SEGMENT_COLOURS = {"train": "#f2f2f2", "val": "#e3eefc", "test": "#fdeee0"}
STRATEGY, BENCHMARK, DRAWDOWN, WEIGHT = "tab:blue", "tab:orange", "tab:red", "tab:green"


def new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def time_axis(index: Any) -> tuple[np.ndarray, list[float], list[str]]:
    """x positions for a bar index and its ticks, computed once.

    Matplotlib's date locator repeats its search on every draw of every shared axis; here dates become
    day numbers and the ticks are fixed: years (every k-th, at most ~10), or matplotlib's own choice,
    frozen, for spans under two years. A non-date index is plotted by bar number."""
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


class EquityCanvas:
    """Draws equity figures, keeping the frame between results over the same bars and segments.

    The frame (axes, segment shading and labels, ticks, legend) is most of a figure's cost; a sweep draws
    one per job over the same bars, so its jobs only swap the curves. The figure returned is reused by the
    next call with the same bars: save it before drawing another. ``equity_figure`` gives a fresh one."""

    def __init__(self) -> None:
        self._index: np.ndarray = np.empty(0)
        self._bounds: dict[str, tuple[int, int]] = {}
        self._figure: Any = None
        self._x: np.ndarray = np.empty(0)
        self._curves: list[Any] = []

    def draw(self, result: Any, title: str = "") -> Any:
        index = np.asarray(result.index)
        if (self._figure is None or self._bounds != result.bounds or len(index) != len(self._index)
                or not np.array_equal(index, self._index)):
            self._frame(result)
            self._index, self._bounds = index, dict(result.bounds)
        for artist in self._curves:
            artist.remove()
        ax_eq, ax_dd, ax_w = self._figure.axes
        x = self._x
        curves = []
        for start, stop in result.bounds.values():
            if stop > start:  # each segment restarts at initial_capital: drawn apart, never joined
                curves += ax_eq.plot(x[start:stop], result.equity[start:stop], color=STRATEGY, lw=1.1)
                curves += ax_eq.plot(x[start:stop], result.benchmark_equity[start:stop], color=BENCHMARK, lw=0.9,
                                     alpha=0.8)
        curves.append(ax_dd.fill_between(x, -result.drawdown, 0, color=DRAWDOWN, alpha=0.5, lw=0))
        curves += ax_w.step(x, result.weights, where="post", lw=0.7, color=WEIGHT)
        self._curves = curves
        for ax in (ax_eq, ax_w):
            ax.relim()
            ax.autoscale_view(scalex=False)
        deepest = float(np.max(result.drawdown)) if len(result.drawdown) else 0.0
        ax_dd.set_ylim(-max(deepest, 1e-6) * 1.05, max(deepest, 1e-6) * 0.05)
        ax_eq.set_title(title, y=1.0)  # a fixed position: automatic placement measures every axis per draw
        return self._figure

    def _frame(self, result: Any) -> None:
        from matplotlib.lines import Line2D

        fig = new_figure(11, 7.5)
        ax_eq, ax_dd, ax_w = fig.subplots(3, 1, sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1.2, 1], "hspace": 0.08})
        x, ticks, labels = time_axis(result.index)
        for name, (start, stop) in result.bounds.items():
            if stop <= start:
                continue
            for ax in (ax_eq, ax_dd, ax_w):
                ax.axvspan(x[start], x[stop - 1], color=SEGMENT_COLOURS[name], zorder=0)
            ax_eq.text(x[start], 0.97, f" {name}", transform=ax_eq.get_xaxis_transform(), va="top", fontsize=9)
        ax_eq.legend([Line2D([], [], color=STRATEGY, lw=1.1), Line2D([], [], color=BENCHMARK, lw=0.9)],
                     ["strategy", "buy & hold"], loc="lower left")
        ax_eq.set_ylabel("equity (restarts per segment)")
        ax_dd.set_ylabel("drawdown")
        ax_w.set_ylabel("weight")
        if ticks:
            ax_w.set_xticks(ticks, labels)
        if len(x):
            ax_w.set_xlim(x[0], x[-1])
        fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.06)  # fixed: tight_layout costs ~0.1 s
        self._figure, self._x, self._curves = fig, x, []


def equity_figure(result: Any, title: str = "") -> Any:
    """A new figure: equity vs buy & hold per segment, drawdown, and weights."""
    return EquityCanvas().draw(result, title)


def training_figure(history: dict[str, list[float]], best_epoch: int) -> Any:
    fig = new_figure(6, 3.5)
    ax = fig.subplots()
    for key, values in history.items():
        ax.plot(range(len(values)), values, label=key, marker="o", ms=3)
    ax.axvline(best_epoch, color="grey", ls="--", lw=0.8, label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled target)")
    ax.legend()
    fig.subplots_adjust(left=0.14, right=0.97, top=0.95, bottom=0.14)  # fixed: tight_layout costs ~0.1 s
    return fig
