"""The research ledger through the real CLI: trials counted across launches, statistics on excess returns, the
reality checks on noise and on a planted edge, and walk-forward's untouched final test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.stats import kurtosis, norm, skew

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SYNTHETIC = ["+strategy=momentum", "model=none", "data=synthetic", "data.drift=0", "strategy.long_only=false"]


def _summaries(launch: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(launch.glob("outputs/multirun/*/*/best_run.json"))]


def _client(tracking_uri: str) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri)
    return client, client.get_experiment_by_name("trading_experiment").experiment_id


def _returns(client: MlflowClient, run, tmp: Path, segment: str) -> np.ndarray:
    """Per-bar excess returns of one segment, read back from the run's logged table by MLflow's own client."""
    path = client.download_artifacts(run.info.run_id, "backtest/portfolio_values.parquet", str(tmp))
    table = pd.read_parquet(path)
    rate = float(run.data.params["backtest.risk_free_rate"]) / float(run.data.params["backtest.periods_per_year_used"])
    returns = table.loc[table["segment"] == segment, "strategy_return"].to_numpy(dtype=float)
    return returns[np.isfinite(returns)] - rate


def _paper_dsr(returns: np.ndarray, trial_sharpes: list[float], n_trials: int) -> float:
    """Bailey & López de Prado (2014), written out here from the paper: per-bar SR, population skew, plain kurtosis."""
    sr = returns.mean() / returns.std(ddof=1)
    gamma3, gamma4, n = skew(returns), kurtosis(returns, fisher=False), len(returns)
    euler = 0.5772156649015329
    sr0 = math.sqrt(np.var(trial_sharpes, ddof=1)) * ((1 - euler) * norm.ppf(1 - 1 / n_trials)
                                                       + euler * norm.ppf(1 - 1 / (n_trials * math.e)))
    return float(norm.cdf((sr - sr0) * math.sqrt(n - 1) / math.sqrt(1 - gamma3 * sr + (gamma4 - 1) / 4 * sr**2)))


@pytest.mark.parametrize("phi,edge", [(0.0, False), (0.3, True)], ids=["random_walk", "ar1_edge"])
def test_reality_checks_tell_noise_from_a_planted_edge(phi, edge, tmp_path: Path, cli_env: dict,
                                                       tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", *SYNTHETIC, "data.n_bars=3000", f"data.autocorrelation={phi}", "seed=4",
                    "backtest.risk_free_rate=0.03", "strategy.lookback=1,2,3,5,10,20", "sweep_name=rc"],
                   cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = _summaries(tmp_path)
    trials = summary["trials"]
    assert trials["n_trials"] == 6 and trials["scope"]["kind"] == "sweep name" and trials["excess_returns"]
    assert 1 <= trials["n_trials_effective"] <= 6
    assert (trials["spa_pvalue"] < 0.05) if edge else (trials["spa_pvalue"] > 0.05)
    assert 0 <= trials["reality_check_pvalue"] <= 1
    low, high = trials["test_sharpe_ci"]
    winner_test = summary["winner"]["test_metrics"]["sharpe_ratio"]
    assert low < winner_test < high
    # DSR from the children's logged returns, less the risk-free rate, by the paper's formula written out here
    client, experiment_id = _client(tracking_uri)
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")
    returns = {r.info.run_id: _returns(client, r, tmp_path, "val") for r in children}
    sharpes = [v.mean() / v.std(ddof=1) for v in returns.values()]
    expected = _paper_dsr(returns[summary["winner"]["run_id"]], sharpes, 6)
    assert trials["deflated_sharpe_ratio"] == pytest.approx(expected, abs=1e-9)
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.metrics["spa_pvalue"] == pytest.approx(trials["spa_pvalue"])
    assert parent.data.metrics["n_trials_effective"] == pytest.approx(trials["n_trials_effective"])
    assert parent.data.metrics["winner_deflated_sharpe_ratio_effective"] == pytest.approx(
        trials["deflated_sharpe_ratio_effective"])
    # what the researcher reads: scope, both DSRs, PBO, SPA and the interval, in two lines
    assert trials["sentence"] in done.stdout
    assert "N = 6" in trials["sentence"] and "effective" in trials["sentence"] and "SPA p = " in trials["sentence"]
    assert f"[{low:.2f}, {high:.2f}]" in trials["sentence"] and len(trials["sentence"].splitlines()) == 2
    # seeded: the same sweep again (resumed: the same runs) prints the same numbers
    again = run_cli(["runner", "-m", *SYNTHETIC, "data.n_bars=3000", f"data.autocorrelation={phi}", "seed=4",
                     "backtest.risk_free_rate=0.03", "strategy.lookback=1,2,3,5,10,20", "sweep_name=rc"],
                    cli_env, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = _summaries(tmp_path)[-1]["trials"]
    assert rerun["n_trials"] == 6 and rerun["spa_pvalue"] == trials["spa_pvalue"]
    assert rerun["test_sharpe_ci"] == trials["test_sharpe_ci"]


def test_a_relaunch_keeps_its_sweep_names_count(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    common = [*SYNTHETIC, "data.n_bars=800", "sweep_name=keep"]
    first = run_cli(["runner", "-m", *common, "strategy.lookback=2,5,10,20,40"], cli_env, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    one = run_cli(["runner", "-m", *common, "strategy.lookback=17"], cli_env, tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    repeat = run_cli(["runner", "-m", *common, "strategy.lookback=5"], cli_env, tmp_path)  # resumed: a pointer
    assert repeat.returncode == 0, repeat.stderr[-3000:]
    summaries = _summaries(tmp_path)
    assert [s["trials"]["n_trials"] for s in summaries] == [5, 6, 6]
    assert [s["trials"]["scope"]["launches"] for s in summaries] == [1, 2, 3]
    assert "over its 3 launches" in repeat.stdout
    # every launch's configurations compete: the winner is the best of all six, wherever it ran
    client, experiment_id = _client(tracking_uri)
    runs = client.search_runs([experiment_id], "tags.sweep_name = 'keep' and attributes.status = 'FINISHED'")
    real = [r for r in runs if "resumed_from" not in r.data.tags and r.data.tags.get("runner.role") != "sweep_parent"]
    assert len(real) == 6
    best = max(real, key=lambda r: r.data.metrics["val_sharpe_ratio"])
    assert summaries[-1]["winner"]["run_id"] == best.info.run_id
    report = run_cli(["runner.report", "--sweep", "keep", "--json", "--top", "10"], cli_env, tmp_path)
    assert report.returncode == 0, report.stderr
    shown = json.loads(report.stdout)
    assert shown["n_trials"] == 6 and len(shown["runs"]) == 6 and shown["runs"][0]["run_id"] == best.info.run_id


def test_three_launches_of_the_same_configurations_count_once(tmp_path: Path, cli_env: dict,
                                                               tracking_uri: str) -> None:
    lookbacks = "strategy.lookback=" + ",".join(str(v) for v in range(2, 10))
    for name in ("a", "b", "a"):  # b re-evaluates (resume is per sweep name); the second a only points
        done = run_cli(["runner", "-m", *SYNTHETIC, "data.n_bars=600", lookbacks, f"sweep_name={name}"], cli_env,
                       tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    client, experiment_id = _client(tracking_uri)
    children = [r for r in client.search_runs([experiment_id], max_results=1000)
                if r.data.tags.get("runner.role") != "sweep_parent"]
    assert len(children) == 24 and sum("resumed_from" in r.data.tags for r in children) == 8
    report = run_cli(["runner.report", "--json"], cli_env, tmp_path)
    assert report.returncode == 0, report.stderr
    shown = json.loads(report.stdout)
    assert shown["n_trials"] == 8 and shown["trials_scope"]["kind"] == "experiment"
    ledger = run_cli(["runner.report", "--ledger", "--json"], cli_env, tmp_path)
    rows = json.loads(ledger.stdout)["trials"]
    assert len(rows) == 8 and all(row["launches"] == ["a", "b"] and row["evaluations"] == 2 for row in rows)
    # another dataset is another trial set: the top run's data decides what is counted
    other = run_cli(["runner", *SYNTHETIC, "data.n_bars=601", "strategy.lookback=3"], cli_env, tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    again = json.loads(run_cli(["runner.report", "--json"], cli_env, tmp_path).stdout)
    top = client.get_run(again["runs"][0]["run_id"])
    assert again["n_trials"] == (1 if top.data.params["data.n_bars"] == "601" else 8)


def test_a_walk_forward_sweep_is_judged_on_its_untouched_final_test(tmp_path: Path, cli_env: dict,
                                                                    tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", *SYNTHETIC, "data.n_bars=1200", "evaluation=walk_forward", "evaluation.folds=3",
                    "evaluation.final_test_bars=200", "strategy.lookback=2,5,20", "sweep_name=wf"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = _summaries(tmp_path)
    winner, trials = summary["winner"], summary["trials"]
    assert winner["selection_segment"] == "oos" and winner["test_segment"] == "final_test" == trials["held_out"]
    client, experiment_id = _client(tracking_uri)
    runs = [r for r in client.search_runs([experiment_id], "tags.sweep_name = 'wf'")
            if r.data.tags.get("runner.role") != "sweep_parent"]
    assert len(runs) == 3
    finals = sorted((r.data.metrics["final_test_sharpe_ratio"] for r in runs), reverse=True)
    top = client.get_run(winner["run_id"])
    assert winner["test_metrics"]["sharpe_ratio"] == top.data.metrics["final_test_sharpe_ratio"]
    assert trials["median_test_metrics"]["sharpe_ratio"] == pytest.approx(float(np.median(finals)))
    assert trials["winner_test_rank"] == finals.index(top.data.metrics["final_test_sharpe_ratio"]) + 1
    assert "final_test" in done.stdout and "winner's final_test rank" in done.stdout
    # the stitched out-of-sample record stops before the final stretch, which has its own table
    stitched = pd.read_parquet(client.download_artifacts(top.info.run_id, "backtest/walk_forward.parquet",
                                                         str(tmp_path)))
    final = pd.read_parquet(client.download_artifacts(top.info.run_id, "backtest/final_test.parquet", str(tmp_path)))
    assert len(final) == 200 and stitched["timestamp"].max() < final["timestamp"].min()
    assert top.data.metrics["final_test_num_bars"] == 200
    # without a final test, the winner block says its "test" is the selection segment, and gives no rank
    plain = run_cli(["runner", "-m", *SYNTHETIC, "data.n_bars=1200", "evaluation=walk_forward", "evaluation.folds=3",
                     "strategy.lookback=2,5,20", "sweep_name=wf_plain"], cli_env, tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "no untouched test: the 'test' shown is the oos segment it was selected on" in plain.stdout
    assert "oos (=sel.)" in plain.stdout and "rank" not in plain.stdout
