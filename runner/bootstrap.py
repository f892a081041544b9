"""Tests over a whole search, from ``arch.bootstrap`` as it ships: Hansen's SPA and White's Reality Check of the
best trial against a benchmark, and a stationary-bootstrap interval of a Sharpe ratio. Seeded (``SEED``): a rerun
gives the same numbers.

- Hansen, "A test for superior predictive ability", JBES 23 (2005): the studentized statistic with the
  consistent re-centring, ``spa_pvalue`` (see ``reality_checks`` for how it is fed to arch).
- White, "A reality check for data snooping", Econometrica 68 (2000): the plain statistic, never re-centred (the
  upper p-value of an unstudentized SPA), ``reality_check_pvalue``.
- Politis & Romano, "The stationary bootstrap", JASA 89 (1994), with the expected block length of Politis & White
  (2004, corrected by Patton, Politis & White 2009).

Losses are negated per-bar returns, so "a trial beats the benchmark" means a higher mean return; a risk-free rate
shifts both sides alike and changes nothing here.
"""

from __future__ import annotations

import math

import numpy as np

SEED = 20061  # fixed: the same returns always give the same p-values and interval
REPS = 1000
LEVEL = 0.95


def block_length(series: np.ndarray) -> int:
    """The stationary bootstrap's expected block length for ``series`` (bars, or bars x columns: their median),
    by Politis & White's automatic selection; at least 1."""
    from arch.bootstrap import optimal_block_length

    lengths = optimal_block_length(np.asarray(series, dtype=float))["stationary"].to_numpy(dtype=float)
    lengths = lengths[np.isfinite(lengths)]
    return max(1, round(float(np.median(lengths)))) if len(lengths) else 1


def reality_checks(benchmark: np.ndarray, trials: np.ndarray, seed: int = SEED) -> dict[str, float]:
    """``{"spa_pvalue", "reality_check_pvalue", "block_size", "trials_tested"}`` for the null that no trial
    (columns of ``trials``, per-bar returns on the same bars as ``benchmark``) has a higher expected return than
    the benchmark. A trial whose returns equal the benchmark's on every bar cannot beat it and is left out.

    arch 8's ``SPA`` takes a ``studentize`` flag but its statistic is the plain maximum mean loss difference
    either way (its p-values do not change with the flag). White's Reality Check is exactly that statistic with
    every model re-centred: ``SPA(...).pvalues["upper"]``. Hansen's SPA divides each trial's mean difference by
    its standard error: the differences go in already divided by ``omega_k``, the stationary bootstrap's estimate
    of their long-run standard deviation (``sqrt(n * Var*(mean*))``, Hansen 2005, section 2.3), and the consistent
    re-centring then applies to the studentized means, ``pvalues["consistent"]``."""
    from arch.bootstrap import SPA, StationaryBootstrap

    bench = np.asarray(benchmark, dtype=float)
    models = np.asarray(trials, dtype=float).reshape(len(bench), -1)
    differences = models - bench[:, None]
    tested = differences.std(axis=0) > 1e-14
    if not tested.any():
        return {"spa_pvalue": 1.0, "reality_check_pvalue": 1.0, "block_size": 1, "trials_tested": 0}
    differences, models = differences[:, tested], models[:, tested]
    block = block_length(differences)
    means = StationaryBootstrap(block, differences, seed=seed).apply(lambda x: x.mean(axis=0), reps=REPS)
    omega = np.sqrt(len(bench) * means.var(axis=0))
    studentized = SPA(np.zeros(len(bench)), -differences / omega, block_size=block, reps=REPS,
                      bootstrap="stationary", seed=seed)
    plain = SPA(-bench, -models, block_size=block, reps=REPS, bootstrap="stationary", seed=seed)
    studentized.compute()
    plain.compute()
    return {"spa_pvalue": float(studentized.pvalues["consistent"]),
            "reality_check_pvalue": float(plain.pvalues["upper"]), "block_size": block,
            "trials_tested": int(tested.sum())}


def sharpe_interval(returns: np.ndarray, periods_per_year: float, seed: int = SEED) -> list[float]:
    """The ``LEVEL`` percentile interval of the annualised Sharpe ``mean / std(ddof=1) * sqrt(ppy)`` of these
    (excess) per-bar returns, from the stationary bootstrap; [nan, nan] with fewer than 3 returns or none varying."""
    from arch.bootstrap import StationaryBootstrap

    values = np.asarray(returns, dtype=float)
    if len(values) < 3 or not values.std() > 1e-14:
        return [math.nan, math.nan]
    scale = math.sqrt(periods_per_year)

    def sharpe(x: np.ndarray) -> float:
        std = x.std(ddof=1)
        return float(x.mean() / std * scale) if std > 1e-14 else 0.0

    bootstrap = StationaryBootstrap(block_length(values), values, seed=seed)
    low, high = bootstrap.conf_int(sharpe, reps=REPS, method="percentile", size=LEVEL)[:, 0]
    return [float(low), float(high)]
