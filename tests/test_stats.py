"""runner.stats against the papers' worked example, hand-checked cases, and null/edge simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runner.stats import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    moments,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_standard_error,
)


def test_the_deflated_sharpe_papers_numerical_example() -> None:
    """Bailey & López de Prado (2014): N = 100 trials, annualised V[SR] = 1/2, best annualised SR = 2.5, five
    years of daily returns (T = 1250, 250 a year), skew -3, kurtosis 10: SR0 = 0.1132 per day, DSR = 0.9004."""
    per_day = math.sqrt(250)
    assert expected_max_sharpe(100, 0.5 / 250) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe_ratio(2.5 / per_day, 1250, -3.0, 10.0, 100, 0.5 / 250) == pytest.approx(0.9004, abs=5e-5)


def test_hand_checked_cases() -> None:
    # normal returns: se = sqrt((1 + 0.5 * 0.1^2) / 100); PSR = Phi(0.1 / se)
    se = math.sqrt(1.005 / 100)
    assert sharpe_standard_error(0.1, 101, 0.0, 3.0) == pytest.approx(se)
    assert probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0) == pytest.approx(0.5 * (1 + math.erf(0.1 / se / 2**0.5)))
    assert probabilistic_sharpe_ratio(0.0, 50, 0.0, 3.0) == pytest.approx(0.5)
    assert probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0, sr_benchmark=0.1) == pytest.approx(0.5)
    # negative skew and fat tails widen the standard error, so the same Sharpe is believed less
    assert probabilistic_sharpe_ratio(0.1, 101, -2.0, 9.0) < probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0)
    assert expected_max_sharpe(1, 0.3) == 0.0 and expected_max_sharpe(10, 0.0) == 0.0
    assert expected_max_sharpe(10, 1.0) < expected_max_sharpe(100, 1.0) < expected_max_sharpe(1000, 1.0)
    assert deflated_sharpe_ratio(0.1, 101, 0.0, 3.0, 1, 0.01) == probabilistic_sharpe_ratio(0.1, 101, 0.0, 3.0)


def test_moments_are_the_papers_population_moments() -> None:
    from scipy import stats as scipy_stats

    returns = np.random.default_rng(0).standard_t(5, 2000) * 0.01 + 0.0005
    sr, skew, kurtosis, n = moments(returns)
    assert n == 2000 and sr == pytest.approx(returns.mean() / returns.std(ddof=1))
    assert skew == pytest.approx(scipy_stats.skew(returns, bias=True))
    assert kurtosis == pytest.approx(scipy_stats.kurtosis(returns, fisher=False, bias=True))
    assert all(math.isnan(v) for v in moments(np.ones(10))[:3])


def test_with_no_edge_the_best_of_many_is_rarely_believed_and_pbo_is_near_a_half() -> None:
    rng = np.random.default_rng(1)
    believed, pbos = 0, []
    for _ in range(40):
        returns = rng.standard_normal((1000, 30)) * 0.01  # 30 trials, none with an edge
        sharpes = returns.mean(axis=0) / returns.std(axis=0, ddof=1)
        best = int(np.argmax(sharpes))
        sr, skew, kurtosis, n = moments(returns[:, best])
        believed += deflated_sharpe_ratio(sr, n, skew, kurtosis, 30, float(np.var(sharpes, ddof=1))) > 0.95
        pbos.append(probability_of_backtest_overfitting(returns, n_partitions=8)[0])
    assert believed <= 4  # a 95% test on the best of 30: rarely fooled (the plain PSR would be, often)
    assert 0.35 < float(np.mean(pbos)) < 0.65


def test_a_real_edge_gives_a_pbo_near_zero() -> None:
    rng = np.random.default_rng(2)
    returns = rng.standard_normal((2000, 20)) * 0.01
    returns[:, 7] += 0.002  # one trial with a per-bar Sharpe of 0.2
    pbo, logits = probability_of_backtest_overfitting(returns)
    assert pbo < 0.05 and len(logits) == math.comb(16, 8)


@pytest.mark.parametrize("call,message", [
    (lambda: probabilistic_sharpe_ratio(0.1, 1, 0.0, 3.0), "n_obs"),
    (lambda: probabilistic_sharpe_ratio(math.nan, 10, 0.0, 3.0), "finite"),
    (lambda: probabilistic_sharpe_ratio(0.1, 10, 0.0, 0.5), "plain fourth moment"),
    (lambda: expected_max_sharpe(0, 1.0), "n_trials"),
    (lambda: probability_of_backtest_overfitting(np.zeros((100, 3)), n_partitions=5), "even"),
    (lambda: probability_of_backtest_overfitting(np.zeros((100, 1))), "at least 2 trials"),
    (lambda: probability_of_backtest_overfitting(np.r_[np.zeros((99, 2)), [[0.0, np.nan]]]), "column"),
])
def test_bad_input_is_a_clear_value_error(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_edge_cases_are_nan_or_defined_alike_in_sharpe_psr_and_sharpe_se() -> None:
    from runner.engine.metrics import belief_metrics, sharpe

    constant = np.full(250, 0.001)  # zero variance: no Sharpe, so no PSR or standard error either
    assert math.isnan(sharpe(constant, 252)) and all(math.isnan(v) for v in belief_metrics(constant).values())
    assert all(math.isnan(v) for v in moments(constant)[:3])
    two_valued = np.tile([0.001, -0.003], 500)  # sits on the bound kurtosis = 1 + skew**2: rounding went below 1
    sr, skew, kurtosis, n = moments(two_valued)
    assert kurtosis == 1.0 and skew == 0.0 and n == 1000
    belief = belief_metrics(two_valued)
    assert math.isfinite(sharpe(two_valued, 252)) and 0 <= belief["psr"] <= 1 and belief["sharpe_se"] > 0
    assert 0 <= deflated_sharpe_ratio(sr, n, skew, kurtosis, 10, 0.01) <= 1
