"""Statistics of belief: is a Sharpe ratio, or the best of many, more than luck? (pure: numpy + stdlib)

From the papers, as published:
- Probabilistic Sharpe ratio: Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier" (2012).
- Expected maximum Sharpe of N trials and the deflated Sharpe ratio: Bailey & López de Prado, "The Deflated
  Sharpe Ratio" (2014), with the Euler-Mascheroni approximation of the expected maximum.
- Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV): Bailey, Borwein,
  López de Prado & Zhu, "The Probability of Backtest Overfitting" (2015).
- Effective number of trials from the eigenvalues of the trials' correlation matrix: Li & Ji, "Adjusting
  multiple testing in multilocus analyses using the eigenvalues of a correlation matrix", Heredity 95 (2005).

Conventions: Sharpe ratios here are per bar (not annualised: divide an annual one by sqrt(periods per year));
``kurtosis`` is the plain fourth standardised moment (3 for a normal), not the excess; ``sr_variance`` is the
variance of the trials' per-bar Sharpe ratios. Bad input raises ``ValueError``, never a silent number.
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist

import numpy as np

EULER_MASCHERONI = 0.5772156649015329
ZERO_STD = 1e-14  # a per-bar standard deviation this small is floating-point noise, not risk: no Sharpe is defined
_NORMAL = NormalDist()


def _check_moments(sr: float, n_obs: int, skew: float, kurtosis: float) -> None:
    if not all(math.isfinite(v) for v in (sr, skew, kurtosis)):
        raise ValueError(f"sr, skew and kurtosis must be finite, got {sr}, {skew}, {kurtosis}.")
    if int(n_obs) != n_obs or n_obs < 2:
        raise ValueError(f"n_obs must be an integer >= 2, got {n_obs}.")
    if kurtosis < 1:
        raise ValueError(f"kurtosis is the plain fourth moment (3 for a normal, always >= 1), got {kurtosis}.")


def sharpe_standard_error(sr: float, n_obs: int, skew: float, kurtosis: float) -> float:
    """sqrt((1 - skew*SR + (kurtosis - 1)/4 * SR^2) / (n - 1)): the per-bar Sharpe's standard error under
    non-normal returns (Bailey & López de Prado 2012, eq. for the asymptotic variance of SR)."""
    _check_moments(sr, n_obs, skew, kurtosis)
    variance = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if variance <= 0:
        raise ValueError(f"skew={skew}, kurtosis={kurtosis} and SR={sr} give a non-positive variance term.")
    return math.sqrt(variance / (n_obs - 1))


def probabilistic_sharpe_ratio(sr: float, n_obs: int, skew: float, kurtosis: float,
                               sr_benchmark: float = 0.0) -> float:
    """PSR(SR*) = Phi((SR - SR*) * sqrt(n - 1) / sqrt(1 - skew*SR + (kurtosis - 1)/4 * SR^2)): the probability
    that the true per-bar Sharpe exceeds ``sr_benchmark``."""
    if not math.isfinite(sr_benchmark):
        raise ValueError(f"sr_benchmark must be finite, got {sr_benchmark}.")
    return _NORMAL.cdf((sr - sr_benchmark) / sharpe_standard_error(sr, n_obs, skew, kurtosis))


def expected_max_sharpe(n_trials: float, sr_variance: float) -> float:
    """E[max SR] of ``n_trials`` trials with no edge: sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e))),
    g the Euler-Mascheroni constant; 0 for one trial. ``n_trials`` may be fractional (an effective number of
    independent trials, ``effective_number_of_trials``); the formula is continuous in N >= 1."""
    if not math.isfinite(n_trials) or n_trials < 1:
        raise ValueError(f"n_trials must be a number >= 1, got {n_trials}.")
    if not math.isfinite(sr_variance) or sr_variance < 0:
        raise ValueError(f"sr_variance must be finite and >= 0, got {sr_variance}.")
    if n_trials == 1:
        return 0.0
    z = ((1 - EULER_MASCHERONI) * _NORMAL.inv_cdf(1 - 1 / n_trials)
         + EULER_MASCHERONI * _NORMAL.inv_cdf(1 - 1 / (n_trials * math.e)))
    return math.sqrt(sr_variance) * z


def deflated_sharpe_ratio(sr: float, n_obs: int, skew: float, kurtosis: float, n_trials: float,
                          sr_variance: float) -> float:
    """DSR: the PSR against the expected maximum Sharpe of ``n_trials`` trials with no edge."""
    return probabilistic_sharpe_ratio(sr, n_obs, skew, kurtosis, expected_max_sharpe(n_trials, sr_variance))


def moments(returns: np.ndarray) -> tuple[float, float, float, int]:
    """(per-bar Sharpe with ddof=1, skew, plain kurtosis, n) of a return series (population moments for the
    skew and kurtosis, as in the papers); NaN where undefined: fewer than 2 returns, or a standard deviation of
    at most ``ZERO_STD`` (constant returns), where ``runner.engine.metrics.sharpe`` is NaN too. The plain
    kurtosis is at least 1 for any distribution (it is ``>= 1 + skew**2``); a value below 1 is rounding (two-valued
    returns sit on that bound) and is reported as 1."""
    values = np.asarray(returns, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan, math.nan, math.nan, n
    mean = values.mean()
    deviations = values - mean
    squares = deviations * deviations  # products, not powers: np.power with 3 or 4 is ~10x slower per element
    total = float(squares.sum())
    m2 = total / n
    std = math.sqrt(total / (n - 1))  # numpy's std(ddof=1): the same sum of squares over n - 1
    if not std > ZERO_STD:
        return math.nan, math.nan, math.nan, n
    sr = float(mean / std)
    deviations *= squares
    m3 = float(deviations.sum()) / n
    squares *= squares
    return sr, m3 / m2**1.5, max(1.0, float(squares.sum()) / n / m2**2), n


def _block_sharpes(returns: np.ndarray, n_partitions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    rows = (len(returns) // n_partitions) * n_partitions
    blocks = returns[:rows].reshape(n_partitions, rows // n_partitions, returns.shape[1])
    return blocks.sum(axis=1), (blocks**2).sum(axis=1), np.full(n_partitions, rows // n_partitions), rows


PBO_CELLS = 1_000_000  # combinations x trials that probability_of_backtest_overfitting computes at once (8 MB)


def probability_of_backtest_overfitting(returns: np.ndarray, n_partitions: int = 16) -> tuple[float, np.ndarray]:
    """PBO by CSCV over a bars x trials matrix of returns, with the per-bar Sharpe as the criterion.

    The rows are cut into ``n_partitions`` (even) blocks of equal length (the last ``T mod S`` rows are left
    out); for each of the C(S, S/2) ways to pick half of the blocks as in-sample, the trial with the best
    in-sample Sharpe is ranked among all trials out of sample, ``w = rank / (N + 1)`` (rank 1 the worst), and
    its logit is ``log(w / (1 - w))``. PBO is the share of logits <= 0. Returns (PBO, the logits).
    """
    matrix = np.asarray(returns, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(f"returns must be a bars x trials matrix with at least 2 trials, got shape {matrix.shape}.")
    if n_partitions < 2 or n_partitions % 2:
        raise ValueError(f"n_partitions must be even and >= 2, got {n_partitions}.")
    if not np.isfinite(matrix).all():
        bad = sorted(set(np.flatnonzero(~np.isfinite(matrix).all(axis=0)).tolist()))
        raise ValueError(f"returns has non-finite values in trial column(s) {bad[:10]}; drop or fill them.")
    if len(matrix) < 2 * n_partitions:
        raise ValueError(f"{len(matrix)} bars are too few for {n_partitions} partitions (each needs >= 2 bars).")
    sums, squares, counts, _ = _block_sharpes(matrix, n_partitions)
    chosen = np.array(list(itertools.combinations(range(n_partitions), n_partitions // 2)))

    def sharpe(mask: np.ndarray) -> np.ndarray:
        n = mask @ counts
        total, total_sq = mask @ sums, mask @ squares
        mean = total / n[:, None]
        variance = (total_sq - n[:, None] * mean**2) / (n[:, None] - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(variance > 0, mean / np.sqrt(np.maximum(variance, 0)), 0.0)

    # Combinations x trials arrays, a block of combinations at a time: 12,870 x 1,000 trials would be ~100 MB each.
    rank = np.empty(len(chosen), dtype=np.int64)
    step = max(1, PBO_CELLS // matrix.shape[1])
    for start in range(0, len(chosen), step):
        in_sample = np.zeros((len(chosen[start:start + step]), n_partitions))
        np.put_along_axis(in_sample, chosen[start:start + step], 1.0, axis=1)
        is_sharpe, oos_sharpe = sharpe(in_sample), sharpe(1.0 - in_sample)
        best = np.argmax(is_sharpe, axis=1)
        oos_of_best = oos_sharpe[np.arange(len(in_sample)), best]
        rank[start:start + step] = (oos_sharpe < oos_of_best[:, None]).sum(axis=1) + 1  # 1 = worst out of sample
    relative = rank / (matrix.shape[1] + 1)
    logits = np.log(relative / (1 - relative))
    return float(np.mean(logits <= 0)), logits


def effective_number_of_trials(returns: np.ndarray) -> float:
    """Li & Ji (2005): M_eff = sum_i f(|lambda_i|), f(x) = I(x >= 1) + (x - floor(x)), over the eigenvalues of the
    trials' correlation matrix (``returns``: bars x trials). N independent trials give about N, N copies of one
    trial give 1; always an integer with 1 <= M_eff <= N. A trial with constant returns has no correlation with
    any other and counts as one of its own."""
    matrix = np.asarray(returns, dtype=float)
    if matrix.ndim != 2 or matrix.shape[1] < 1 or len(matrix) < 2:
        raise ValueError(f"returns must be a bars x trials matrix with >= 2 bars and >= 1 trial, got {matrix.shape}.")
    if not np.isfinite(matrix).all():
        raise ValueError("returns has non-finite values; drop or fill them.")
    if matrix.shape[1] == 1:
        return 1.0
    deviations = matrix - matrix.mean(axis=0)
    scale = np.sqrt((deviations * deviations).sum(axis=0))
    live = scale > ZERO_STD * math.sqrt(len(matrix))
    standard = np.zeros_like(deviations)
    standard[:, live] = deviations[:, live] / scale[live]
    correlation = standard.T @ standard
    np.fill_diagonal(correlation, 1.0)
    # The eigenvalues sum to N (the trace), so sum f(lambda) = N - sum over lambda >= 1 of (floor(lambda) - 1): an
    # integer, computed in that form so that float rounding of the sum cannot show 19.999999 for 20. Rounded before
    # the floor: N copies have an eigenvalue of N, not N - 1e-15.
    eigenvalues = np.round(np.abs(np.linalg.eigvalsh(correlation)), 6)
    large = eigenvalues[eigenvalues >= 1.0]
    m_eff = float(matrix.shape[1] - np.sum(np.floor(large) - 1.0))
    return min(float(matrix.shape[1]), max(1.0, m_eff))
