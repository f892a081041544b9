"""Performance statistics of one segment: pure functions of its returns, equity, weights and trades.

Every metric follows DESIGN ("Execution and metric conventions"); a metric that is undefined (too few
returns, zero variance, no drawdown, no trades) is NaN, never inf, so it can never win a best-run search.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from runner.stats import ZERO_STD, moments, probabilistic_sharpe_ratio, sharpe_standard_error


def _nan_div(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator and math.isfinite(denominator) else math.nan


def sharpe(returns: np.ndarray, periods_per_year: int, risk_free_rate: float = 0.0) -> float:
    """mean(s - rf/ppy) / std(s, ddof=1) * sqrt(ppy); NaN with < 2 returns or zero variance."""
    if len(returns) < 2:
        return math.nan
    std = float(np.std(returns, ddof=1))
    if not std > ZERO_STD:
        return math.nan
    return float((np.mean(returns) - risk_free_rate / periods_per_year) / std * math.sqrt(periods_per_year))


def sortino(returns: np.ndarray, periods_per_year: int, risk_free_rate: float = 0.0) -> float:
    """mean(x) / sqrt(mean(min(x, 0)**2)) * sqrt(ppy), x = s - rf/ppy; NaN with no downside."""
    if len(returns) < 2:
        return math.nan
    excess = returns - risk_free_rate / periods_per_year
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside <= ZERO_STD:
        return math.nan
    return float(np.mean(excess) / downside * math.sqrt(periods_per_year))


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
                    benchmark_total_return: float | None = None) -> dict[str, float]:
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
    volatility = float(np.std(strategy_returns, ddof=1)) if n > 1 else math.nan
    return {
        "total_return": total_return,
        "cagr": cagr,
        "annual_volatility": volatility * math.sqrt(ppy),  # std(s, ddof=1) * sqrt(ppy)
        "sharpe_ratio": sharpe(strategy_returns, ppy, risk_free_rate),
        "sortino_ratio": sortino(strategy_returns, ppy, risk_free_rate),
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
        **benchmark_relative(strategy_returns, bar_returns, ppy, risk_free_rate),
        **tail_risk(strategy_returns),
        **belief_metrics(strategy_returns - risk_free_rate / ppy),
    }


def benchmark_relative(strategy_returns: np.ndarray, benchmark_returns: np.ndarray, periods_per_year: int,
                       risk_free_rate: float = 0.0) -> dict[str, float]:
    """Against buy and hold, per bar (empyrical's conventions): ``beta`` = cov(y, x) / var(x) and ``alpha`` =
    (1 + mean(y - beta x))**ppy - 1 (annualised), with y, x the strategy's and the benchmark's returns less
    rf/ppy; ``information_ratio`` = mean(a) / std(a, ddof=1) * sqrt(ppy), a = s - b (annualised; empyrical's
    ``excess_sharpe`` times sqrt(ppy)). NaN with < 2 returns or a flat benchmark."""
    nan = {"alpha": math.nan, "beta": math.nan, "information_ratio": math.nan}
    if len(strategy_returns) < 2:
        return nan
    y = strategy_returns - risk_free_rate / periods_per_year
    x = benchmark_returns - risk_free_rate / periods_per_year
    residual = x - np.mean(x)
    spread = float(np.mean(residual * residual))
    beta = float(np.mean(residual * y)) / spread if spread > ZERO_STD**2 else math.nan
    alpha = (float(np.mean(y - beta * x)) + 1.0) ** periods_per_year - 1.0 if math.isfinite(beta) else math.nan
    active = strategy_returns - benchmark_returns
    tracking = float(np.std(active, ddof=1))
    information = float(np.mean(active)) / tracking * math.sqrt(periods_per_year) if tracking > ZERO_STD else math.nan
    return {"alpha": alpha, "beta": beta, "information_ratio": information}


VAR_CUTOFF = 0.05  # the tail value_at_risk and conditional_value_at_risk look at


def tail_risk(returns: np.ndarray, cutoff: float = VAR_CUTOFF) -> dict[str, float]:
    """Historical, per bar (empyrical's conventions): ``value_at_risk`` the ``cutoff`` quantile of the returns
    (linear interpolation; a return, negative for a loss), ``conditional_value_at_risk`` the mean of the
    ``int((n - 1) * cutoff) + 1`` worst returns. NaN without returns."""
    if not len(returns):
        return {"value_at_risk": math.nan, "conditional_value_at_risk": math.nan}
    worst = int((len(returns) - 1) * cutoff)
    return {"value_at_risk": float(np.percentile(returns, 100 * cutoff)),
            "conditional_value_at_risk": float(np.mean(np.partition(returns, worst)[:worst + 1]))}


def belief_metrics(excess_returns: np.ndarray) -> dict[str, float]:
    """``psr`` (the probability that the true per-bar Sharpe exceeds 0), ``skew``, ``kurtosis`` (plain, 3 for a
    normal) and ``sharpe_se`` (the per-bar Sharpe's standard error under those moments), ``runner.stats``."""
    sr, skew, kurtosis, n = moments(excess_returns)
    psr = se = math.nan
    if math.isfinite(sr):
        try:
            se = sharpe_standard_error(sr, n, skew, kurtosis)
            psr = probabilistic_sharpe_ratio(sr, n, skew, kurtosis)
        except ValueError:  # moments for which the asymptotic variance is not positive: undefined
            pass
    return {"psr": psr, "skew": skew, "kurtosis": kurtosis, "sharpe_se": se}


def trade_metrics(trades: pd.DataFrame, start: int, stop: int) -> dict[str, float]:
    """Round-trip statistics over the trades closed in bars [start, stop) (an open trade never counts)."""
    if len(trades):
        exits = trades["exit_bar"].to_numpy()
        closed = ~trades["is_open"].to_numpy(dtype=bool) & (exits >= start) & (exits < stop)
        returns = trades["return"].to_numpy(dtype=float)[closed]
    else:
        returns = np.empty(0)
    wins, losses = returns[returns > 0], returns[returns < 0]
    # NaN where undefined: no closed trades -> no win rate/expectancy; no losing trade -> no factor.
    return {"num_trades": float(len(returns)),
            "win_rate": float(len(wins) / len(returns)) if len(returns) else math.nan,
            "profit_factor": float(wins.sum() / -losses.sum()) if len(losses) else math.nan,
            "expectancy": float(returns.mean()) if len(returns) else math.nan}
