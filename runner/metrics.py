"""Performance statistics of one segment: a pure function of its returns, equity and weights.

Every metric follows DESIGN ("Execution and metric conventions"); a metric that is undefined (too few
returns, zero variance, no drawdown) is NaN, never inf, so it can never win a best-run search.
"""

from __future__ import annotations

import math

import numpy as np

# A standard deviation this small relative to the mean level is floating-point noise, not risk.
_ZERO_STD = 1e-14


def _nan_div(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator and math.isfinite(denominator) else math.nan


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1) without temporaries: one pass for the sum, one dot product.

    The one-pass variance loses precision only when the mean dominates the spread; then (and for
    near-constant series, whose std must come out exactly 0) it falls back to the two-pass formula.
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = float(values.sum() / n)
    if n < 2:
        return mean, math.nan
    var = (float(np.dot(values, values)) - n * mean * mean) / (n - 1)
    if var <= 1e-6 * mean * mean:
        deviations = values - mean
        var = float(np.dot(deviations, deviations)) / (n - 1)
    return mean, math.sqrt(max(var, 0.0))


def sharpe(returns: np.ndarray, periods_per_year: int, risk_free_rate: float = 0.0,
           moments: tuple[float, float] | None = None) -> float:
    """mean(s - rf/ppy) / std(s, ddof=1) * sqrt(ppy); NaN with < 2 returns or zero variance."""
    mean, std = moments or mean_std(returns)
    if not std > _ZERO_STD:
        return math.nan
    return float((mean - risk_free_rate / periods_per_year) / std * math.sqrt(periods_per_year))


def sortino(returns: np.ndarray, periods_per_year: int, risk_free_rate: float = 0.0,
            scratch: np.ndarray | None = None) -> float:
    """mean(x) / sqrt(mean(min(x, 0)**2)) * sqrt(ppy), x = s - rf/ppy; NaN with no downside.

    ``scratch`` (at least as long as ``returns``) avoids allocating a temporary per call.
    """
    n = len(returns)
    if n < 2:
        return math.nan
    excess = np.subtract(returns, risk_free_rate / periods_per_year,
                         out=scratch[:n] if scratch is not None else None)
    mean = float(excess.sum() / n)
    np.minimum(excess, 0.0, out=excess)
    downside = math.sqrt(float(np.dot(excess, excess)) / n)
    if downside <= _ZERO_STD:
        return math.nan
    return float(mean / downside * math.sqrt(periods_per_year))


def longest_underwater(drawdown: np.ndarray) -> int:
    """Longest stretch of bars spent below a previous peak (between two bars at a peak)."""
    at_peak = np.flatnonzero(drawdown <= 0.0)
    if len(at_peak) == 0:
        return len(drawdown)
    gaps = np.diff(np.concatenate([[-1], at_peak, [len(drawdown)]])) - 1
    return int(gaps.max())


def segment_metrics(strategy_returns: np.ndarray, bar_returns: np.ndarray, equity: np.ndarray,
                    drawdown: np.ndarray, weights: np.ndarray, turnover: np.ndarray, periods_per_year: int,
                    risk_free_rate: float, initial_capital: float,
                    benchmark_total_return: float | None = None,
                    scratch: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one segment.

    ``strategy_returns``/``bar_returns``: the segment's defined returns (n return periods);
    ``equity``/``drawdown``/``weights``/``turnover``: one value per bar of the segment. The equity curve
    starts from ``initial_capital`` before the first return, so E[0] in DESIGN's formulas is the capital.
    """
    n = len(strategy_returns)
    ppy = periods_per_year
    growth = float(equity[-1] / initial_capital) if len(equity) else math.nan
    total_return = growth - 1.0  # E[-1]/E[0] - 1
    cagr = growth ** (ppy / n) - 1.0 if n and growth > 0 else (-1.0 if n else math.nan)  # n return periods
    max_drawdown = float(drawdown.max()) if len(drawdown) else math.nan  # max(1 - E/cummax(E)), positive
    benchmark_total = (float(benchmark_total_return) if benchmark_total_return is not None
                       else float(np.prod(1.0 + bar_returns) - 1.0) if n else math.nan)
    moments = mean_std(strategy_returns)
    return {
        "total_return": total_return,
        "cagr": cagr,
        # std(s, ddof=1) * sqrt(ppy)
        "annual_volatility": moments[1] * math.sqrt(ppy),
        "sharpe_ratio": sharpe(strategy_returns, ppy, risk_free_rate, moments),
        "sortino_ratio": sortino(strategy_returns, ppy, risk_free_rate, scratch),
        "max_drawdown": max_drawdown,
        # longest stretch of bars spent below a previous equity peak
        "max_drawdown_duration": float(longest_underwater(drawdown)),
        "calmar_ratio": _nan_div(cagr, max_drawdown),  # cagr / max_drawdown; NaN without a drawdown
        "exposure": float(np.count_nonzero(weights) / len(weights)) if len(weights) else math.nan,
        # annualised mean |w[t] - w[t-1]| over the segment's bars
        "turnover": float(np.mean(turnover) * ppy) if len(turnover) else math.nan,
        "benchmark_total_return": benchmark_total,
        "benchmark_sharpe_ratio": sharpe(bar_returns, ppy, risk_free_rate),
        "excess_return": total_return - benchmark_total,  # strategy minus buy-and-hold total return
        "num_bars": float(len(equity)),
    }
