"""Figures (built, never saved here): equity vs benchmark with segments, drawdown, weights; training."""

from __future__ import annotations

from typing import Any

SEGMENT_COLOURS = {"train": "#f2f2f2", "val": "#e3eefc", "test": "#fdeee0"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def equity_figure(result: Any, title: str = "") -> Any:
    plt = _pyplot()
    fig, (ax_eq, ax_dd, ax_w) = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True,
                                            gridspec_kw={"height_ratios": [3, 1.2, 1], "hspace": 0.08})
    index = result.index
    for number, (name, (start, stop)) in enumerate(result.bounds.items()):
        if stop <= start:
            continue
        for ax in (ax_eq, ax_dd, ax_w):
            ax.axvspan(index[start], index[stop - 1], color=SEGMENT_COLOURS[name], zorder=0)
        ax_eq.text(index[start], 0.97, f" {name}", transform=ax_eq.get_xaxis_transform(), va="top", fontsize=9)
        # Each segment's curves restart at initial_capital: drawn apart, never joined across a boundary.
        ax_eq.plot(index[start:stop], result.equity[start:stop], color="tab:blue", lw=1.1,
                   label="strategy" if number == 0 else None)
        ax_eq.plot(index[start:stop], result.benchmark_equity[start:stop], color="tab:orange", lw=0.9, alpha=0.8,
                   label="buy & hold" if number == 0 else None)
    ax_eq.set_ylabel("equity (restarts per segment)")
    ax_eq.legend(loc="lower left")
    ax_eq.set_title(title)
    ax_dd.fill_between(index, -result.drawdown, 0, color="tab:red", alpha=0.5, lw=0)
    ax_dd.set_ylabel("drawdown")
    ax_w.step(index, result.weights, where="post", lw=0.7, color="tab:green")
    ax_w.set_ylabel("weight")
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.06)  # fixed: tight_layout costs ~0.1 s
    return fig


def training_figure(history: dict[str, list[float]], best_epoch: int) -> Any:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, values in history.items():
        ax.plot(range(len(values)), values, label=key, marker="o", ms=3)
    ax.axvline(best_epoch, color="grey", ls="--", lw=0.8, label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (scaled target)")
    ax.legend()
    fig.tight_layout()
    return fig
