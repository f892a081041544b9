"""What every logged metric means, and its unit: the one source of each run's ``metrics/descriptions.json``, the
README's metric table (``python -m runner.config.docs --write``) and ``python -m runner.report --metrics``.

A segment metric is logged as ``{segment}_{name}`` (``test_sharpe_ratio``), per walk-forward fold as
``fold_test_{name}`` (step = fold) and per CPCV path as ``path_{name}`` (step = path); the run-level ones
(training, CPCV summaries, a sweep parent's belief) are named whole.
"""

from __future__ import annotations

import re

# name -> (meaning, unit). Per bar: of the segment's bar returns; annualised with backtest.periods_per_year (ppy).
SEGMENT: dict[str, tuple[str, str]] = {
    "total_return": ("equity at the segment's end over the starting capital, minus 1", "fraction"),
    "cagr": ("compound annual growth rate: (E_end / E_0) ** (ppy / n) - 1, n return periods", "fraction/year"),
    "annual_volatility": ("std(s, ddof=1) * sqrt(ppy) of the per-bar strategy returns s", "fraction/sqrt(year)"),
    "sharpe_ratio": ("mean(s - rf/ppy) / std(s, ddof=1) * sqrt(ppy)", "annualised ratio"),
    "sortino_ratio": ("mean(x) / sqrt(mean(min(x, 0)^2)) * sqrt(ppy), x = s - rf/ppy", "annualised ratio"),
    "max_drawdown": ("largest fall from a running equity peak, max(1 - E / cummax(E)); positive", "fraction"),
    "max_drawdown_duration": ("longest stretch spent below a previous equity peak", "bars"),
    "calmar_ratio": ("cagr / max_drawdown", "ratio"),
    "exposure": ("share of bars holding a position (any weight not 0)", "fraction of bars"),
    "turnover": ("mean |w[t] - w[t-1]| (summed over assets) times ppy: how many times the book is traded a year",
                 "x equity/year"),
    "benchmark_total_return": ("buy and hold's total return over the segment (a universe: its equal-weight index)",
                               "fraction"),
    "benchmark_sharpe_ratio": ("buy and hold's Sharpe ratio over the segment", "annualised ratio"),
    "excess_return": ("total_return - benchmark_total_return", "fraction"),
    "num_bars": ("bars in the segment", "bars"),
    "alpha": ("CAPM alpha against buy and hold: (1 + mean(y - beta x)) ** ppy - 1, y and x the strategy's and "
              "buy and hold's per-bar returns less rf/ppy (empyrical's alpha)", "fraction/year"),
    "beta": ("CAPM beta against buy and hold: cov(y, x) / var(x) of the per-bar excess returns", "ratio"),
    "information_ratio": ("mean(s - b) / std(s - b, ddof=1) * sqrt(ppy), b buy and hold's per-bar returns",
                          "annualised ratio"),
    "value_at_risk": ("historical 95% value at risk: the 5% quantile of the per-bar returns (negative: a loss)",
                      "fraction/bar"),
    "conditional_value_at_risk": ("historical 95% expected shortfall: the mean of the worst 5% of per-bar returns",
                                  "fraction/bar"),
    "psr": ("probabilistic Sharpe ratio: the probability that the true per-bar Sharpe exceeds 0 (Bailey & Lopez de "
            "Prado 2012)", "probability"),
    "skew": ("skewness of the per-bar excess returns (population moments)", ""),
    "kurtosis": ("kurtosis of the per-bar excess returns, plain (3 for a normal)", ""),
    "sharpe_se": ("standard error of the per-bar (not annualised) Sharpe under those skew and kurtosis", "per bar"),
    "num_trades": ("round trips closed in the segment (an open one never counts)", "trades"),
    "win_rate": ("share of closed round trips with a positive return", "fraction"),
    "profit_factor": ("sum of winning round trips' returns / -(sum of losing ones')", "ratio"),
    "expectancy": ("mean return of a closed round trip", "fraction/trade"),
    "avg_holdings": ("a universe: mean number of assets held per bar", "assets"),
}
SEGMENTS = {"train": "train segment (a model's in-sample)", "val": "validation segment (a model's early stopping)",
            "test": "test segment (out of sample)", "oos": "walk-forward's stitched out-of-sample record",
            "final_test": "untouched final stretch", "fold_test": "each walk-forward fold's test stretch, step = fold",
            "path": "each CPCV path, step = path"}
CPCV_STATS = {"mean": "mean", "std": "standard deviation", "p05": "5th percentile", "p50": "median",
              "p95": "95th percentile"}
RUN: dict[str, tuple[str, str]] = {
    "train_loss": ("training loss per epoch (mean squared error on standardised targets), step = epoch", ""),
    "val_loss": ("validation loss per epoch, step = epoch", ""),
    "best_epoch": ("the epoch whose weights were kept (lowest val_loss)", "epoch"),
    "train_seconds": ("wall-clock training time", "seconds"),
    "cpcv_n_paths": ("CPCV: backtest paths assembled from the splits", "paths"),
    "cpcv_n_splits": ("CPCV: train/test splits", "splits"),
    "cpcv_pbo": ("CPCV: probability of backtest overfitting over the run's paths", "probability"),
    "n_trials": ("sweep parent: trials the winner is judged against (distinct configurations x data)", "trials"),
    "n_trials_effective": ("sweep parent: the trials' effective number given their correlation", "trials"),
    "winner_deflated_sharpe_ratio": ("sweep parent: the winner's deflated Sharpe ratio at n_trials", "probability"),
    "winner_deflated_sharpe_ratio_effective": ("sweep parent: the winner's deflated Sharpe at n_trials_effective",
                                               "probability"),
    "pbo": ("sweep parent: probability of backtest overfitting (CSCV over the trials)", "probability"),
    "spa_pvalue": ("sweep parent: Hansen's SPA p-value against buy and hold over the whole search", "p-value"),
    "reality_check_pvalue": ("sweep parent: White's reality check p-value against buy and hold", "p-value"),
}
_CPCV = re.compile(rf"^cpcv_(\w+?)_({'|'.join(CPCV_STATS)})$")


def describe(key: str) -> dict[str, str] | None:
    """``{"meaning", "unit"}`` of a logged metric key, or None for a key this project does not log."""
    if key in RUN:
        meaning, unit = RUN[key]
        return {"meaning": meaning, "unit": unit}
    cpcv = _CPCV.match(key)
    if cpcv and cpcv.group(1) in SEGMENT:
        meaning, unit = SEGMENT[cpcv.group(1)]
        return {"meaning": f"{CPCV_STATS[cpcv.group(2)]} over the CPCV paths of: {meaning}", "unit": unit}
    for segment in sorted(SEGMENTS, key=len, reverse=True):  # fold_test before test, final_test before test
        name = key[len(segment) + 1:] if key.startswith(f"{segment}_") else None
        if name in SEGMENT:
            meaning, unit = SEGMENT[name]
            return {"meaning": f"{meaning}; over the {SEGMENTS[segment]}", "unit": unit}
    return None


def descriptions(keys: list[str]) -> dict[str, dict[str, str]]:
    """``metrics/descriptions.json``: each logged key's meaning and unit (``(undocumented)`` for one not known)."""
    return {key: describe(key) or {"meaning": "(undocumented)", "unit": ""} for key in sorted(keys)}


def render_markdown() -> str:
    """The README's metric table: segment metrics (logged per segment, fold and path), then the run-level ones."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    prefixes = ", ".join(f"`{segment}_`" for segment in SEGMENTS)
    out = [f"Per segment, logged as `<segment>_<name>` with `<segment>_` one of {prefixes}; a CPCV run also logs "
           f"`cpcv_<name>_<stat>`, `<stat>` one of {', '.join(f'`{s}`' for s in CPCV_STATS)}:", "",
           "| name | unit | meaning |", "|---|---|---|"]
    out += [f"| `{name}` | {cell(unit)} | {cell(meaning)} |" for name, (meaning, unit) in SEGMENT.items()]
    out += ["", "Run-level:", "", "| key | unit | meaning |", "|---|---|---|"]
    out += [f"| `{key}` | {cell(unit)} | {cell(meaning)} |" for key, (meaning, unit) in RUN.items()]
    return "\n".join(out) + "\n"


def render_text(width: int = 100) -> str:
    """The same table for a terminal (``python -m runner.report --metrics``), wrapped to ``width`` columns."""
    import textwrap

    def rows(title: str, table: dict[str, tuple[str, str]]) -> list[str]:
        out = textwrap.wrap(title, width)
        names, units = max(map(len, table)) + 2, max(len(unit) for _, unit in table.values()) + 2
        for name, (meaning, unit) in table.items():
            head = f"  {name:<{names}}{unit:<{units}}"
            out += textwrap.wrap(meaning, width, initial_indent=head, subsequent_indent=" " * len(head))
        return out

    segments = ", ".join(f"{segment}_" for segment in SEGMENTS)
    lines = rows(f"per segment, as <segment>_<name> ({segments}) and cpcv_<name>_<stat> ("
                 f"{', '.join(CPCV_STATS)}):", SEGMENT)
    return "\n".join(lines + [""] + rows("run-level:", RUN)) + "\n"
