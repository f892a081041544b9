"""runner.stats against the papers' worked example, hand-checked cases, and null/edge simulations."""

from __future__ import annotations

import math
import os

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


def test_effective_trials_follow_li_and_ji() -> None:
    """Li & Ji (2005): M_eff = sum f(|lambda|), f(x) = I(x >= 1) + x - floor(x). For N trials equicorrelated at
    rho the eigenvalues are 1 + (N - 1) rho (once) and 1 - rho (N - 1 times), so
    M_eff = 1 + frac((N - 1) rho) + (N - 1)(1 - rho)."""
    from runner.stats import effective_number_of_trials

    rng = np.random.default_rng(0)
    n, rho = 20, 0.9
    common = rng.standard_normal((200_000, 1))
    equicorrelated = math.sqrt(rho) * common + math.sqrt(1 - rho) * rng.standard_normal((200_000, n))
    expected = 1 + ((n - 1) * rho) % 1 + (n - 1) * (1 - rho)
    assert effective_number_of_trials(equicorrelated) == pytest.approx(expected, abs=0.05)
    independent = rng.standard_normal((5000, n))
    assert effective_number_of_trials(independent) == n  # eigenvalues near 1: about N, never above it
    assert effective_number_of_trials(np.repeat(independent[:, :1], n, axis=1)) == 1.0  # N copies of one trial
    flat = np.c_[independent[:, :3], np.zeros(5000)]  # a trial that never trades counts as one of its own
    assert effective_number_of_trials(flat) == 4.0
    for _ in range(20):  # always within [1, N]
        k = int(rng.integers(2, 30))
        mixed = rng.standard_normal((300, 1)) * rng.uniform(0, 2) + rng.standard_normal((300, k))
        assert 1.0 <= effective_number_of_trials(mixed) <= k
    with pytest.raises(ValueError, match="non-finite"):
        effective_number_of_trials(np.r_[independent[:10], [[np.nan] * n]])


def test_a_fractional_trial_count_deflates_between_its_integer_neighbours() -> None:
    """The DSR at an effective N (a real number) lies between the DSRs at the integers around it."""
    args = (0.08, 500, -0.3, 4.0)
    at = [deflated_sharpe_ratio(*args, n, 0.002) for n in (3, 3.5, 4)]
    assert at[0] > at[1] > at[2]


def test_reality_checks_reject_a_real_edge_and_not_noise() -> None:
    """Hansen's SPA and White's Reality Check (arch.bootstrap) against a benchmark: over 40 searches of 20 trials
    with no edge, the 5% tests reject about 5% of the time; one trial with a per-bar mean 0.25 standard deviations
    above the benchmark's is found."""
    from runner.bootstrap import reality_checks

    rng = np.random.default_rng(5)
    rejected = 0
    for _ in range(40):
        benchmark, trials = rng.standard_normal(400) * 0.01, rng.standard_normal((400, 20)) * 0.01
        rejected += reality_checks(benchmark, trials)["spa_pvalue"] < 0.05
    assert rejected <= 5
    benchmark, trials = rng.standard_normal(400) * 0.01, rng.standard_normal((400, 20)) * 0.01
    trials[:, 3] += 0.0025 + 0.2 * (benchmark - 0.0)  # an edge, partly correlated with the benchmark
    found = reality_checks(benchmark, trials)
    assert found["spa_pvalue"] < 0.01 and found["reality_check_pvalue"] < 0.05 and found["trials_tested"] == 20
    assert reality_checks(benchmark, trials) == found  # seeded
    assert reality_checks(benchmark, np.c_[benchmark, benchmark])["trials_tested"] == 0  # equal: cannot beat it


def test_the_bootstrap_interval_of_a_sharpe_brackets_it_and_narrows_with_more_bars() -> None:
    from runner.bootstrap import sharpe_interval

    rng = np.random.default_rng(6)
    returns = rng.standard_normal(4000) * 0.01 + 0.0005
    short, long = sharpe_interval(returns[:250], 252), sharpe_interval(returns, 252)
    for interval, values in ((short, returns[:250]), (long, returns)):
        point = values.mean() / values.std(ddof=1) * math.sqrt(252)
        assert interval[0] < point < interval[1]
    assert long[1] - long[0] < (short[1] - short[0]) / 2  # 16x the bars: about a quarter of the width
    assert sharpe_interval(returns, 252) == long  # seeded
    assert all(math.isnan(v) for v in sharpe_interval(np.zeros(100), 252))


WORKER_SCRIPT = """
import json, os, signal, sys
import numpy as np
from runner.sweeps.bootstrap_worker import BootstrapWorker

def children():
    found = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as listed:
            found += [int(pid) for pid in listed.read().split()]
    return found

rng = np.random.default_rng(7)
benchmark, trials = rng.standard_normal(300) * 0.01, rng.standard_normal((300, 6)) * 0.01
worker = BootstrapWorker.start()
out = {"children_at_start": len(children()),
       "checks": worker.reality_checks(benchmark, trials), "interval": worker.sharpe_interval(trials[:, 0], 252),
       "arch_here": "arch" in sys.modules}
try:
    worker.reality_checks(benchmark[:7], trials)  # wrong shapes: the same error as here, raised here
except ValueError as error:
    out["error"] = type(error).__name__
worker.close()
lost = BootstrapWorker.start()
out["children_of_the_second"] = len(children())
for pid in children():
    os.kill(pid, signal.SIGKILL)  # the worker lost: this process computes instead
out["after_loss"] = lost.reality_checks(benchmark, trials)
lost.close()
out["children_at_end"] = len(children())
print(json.dumps(out))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: a sweep starts no worker")
def test_a_sweeps_bootstrap_worker_gives_this_process_numbers_and_outlives_nothing() -> None:
    """runner.sweeps.bootstrap_worker: a sweep's reality checks and interval computed by a second process (so this
    one never imports arch) equal this process's, seeded; an error there is raised here; a worker lost mid-sweep
    leaves the computation to this process with the same numbers; ``close()`` leaves no process behind."""
    import json
    import subprocess
    import sys

    from runner.bootstrap import reality_checks, sharpe_interval

    done = subprocess.run([sys.executable, "-c", WORKER_SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    rng = np.random.default_rng(7)
    benchmark, trials = rng.standard_normal(300) * 0.01, rng.standard_normal((300, 6)) * 0.01
    expected = reality_checks(benchmark, trials)
    assert out["children_at_start"] == out["children_of_the_second"] == 1 and out["children_at_end"] == 0
    assert out["checks"] == expected and out["after_loss"] == expected
    assert out["interval"] == sharpe_interval(trials[:, 0], 252)
    assert out["arch_here"] is False and out["error"] == "ValueError"
