"""``hydra/launcher=batch``: a grid of rule configurations in one engine pass, each tracked as the child run its
basic-launcher job would log; checked against the engine run alone, the basic launcher and single runs."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from runner.config.schema import BacktestConf
from runner.engine.backtest import run_backtest
from runner.engine.grid import grid_backtests
from runner.tracking.tables import read_backtest_table
from tests.conftest import run_cli

SYNTHETIC = ["+strategy=sma_crossover", "model=none", "data=synthetic", "data.n_bars=800"]
# What a sweep's child has that a single run (or another sweep's child) cannot share.
OWN_TAGS = {"mlflow.runName", "mlflow.parentRunId", "sweep_id", "sweep_name", "job_number", "runner.pid", "argv",
            "overrides", "mlflow.source.name", "mlflow.source.type", "mlflow.user", "mlflow.source.git.commit",
            "mlflow.loggedArtifacts"}


@pytest.mark.parametrize("rebalance", [1, 5, "monthly"])
def test_the_grid_pass_gives_each_configuration_its_single_backtest(rebalance: object) -> None:
    rng = np.random.default_rng(7)
    n = 900
    index = pd.bdate_range("2012-01-02", periods=n)
    close = 50 * np.cumprod(1 + rng.normal(0.0003, 0.012, n))
    targets = np.round(rng.uniform(-1.6, 1.6, (n, 9)), 1)
    targets[:, 0] = 0.0
    targets[: n // 2, 1] = 1.0
    config = BacktestConf(rebalance=rebalance, periods_per_year=252, commission=0.0007, slippage=0.0003,
                          max_leverage=1.2)
    grid = list(grid_backtests(close, targets, 500, 700, config, index, chunk=4))  # chunks of 4, 4 and 1
    assert len(grid) == 9
    for column, result in enumerate(grid):
        alone = run_backtest(close, targets[:, column], 500, 700, config, index)
        pd.testing.assert_frame_equal(result.portfolio_values(), alone.portfolio_values(), check_exact=True)
        pd.testing.assert_frame_equal(result.trades, alone.trades, check_exact=True)
        pd.testing.assert_frame_equal(result.fills, alone.fills, check_exact=True)
        assert json.dumps(result.flat_metrics()) == json.dumps(alone.flat_metrics())  # NaN == NaN, bit for bit


def test_a_later_bar_never_moves_an_earlier_one_in_the_grid_pass() -> None:
    rng = np.random.default_rng(3)
    n, cut = 600, 400
    close = 20 * np.cumprod(1 + rng.normal(0, 0.01, n))
    targets = rng.uniform(-1, 1, (n, 5))
    config = BacktestConf(periods_per_year=252, commission=0.001)
    before = [r.portfolio_values() for r in grid_backtests(close, targets, 300, 500, config, pd.RangeIndex(n))]
    close[cut:] *= rng.uniform(0.5, 1.5, n - cut)
    targets[cut:] = rng.uniform(-1, 1, (n - cut, 5))
    after = [r.portfolio_values() for r in grid_backtests(close, targets, 300, 500, config, pd.RangeIndex(n))]
    for a, b in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(a.iloc[:cut], b.iloc[:cut], check_exact=True)


def _runs(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("trading_experiment")
    return client.search_runs([experiment.experiment_id], max_results=5000)


def _children(runs: list, sweep_name: str) -> dict:
    """config hash -> the sweep's child run."""
    return {r.data.tags["config_hash"]: r for r in runs if r.data.tags.get("sweep_name") == sweep_name
            and r.data.tags.get("runner.role") != "sweep_parent"}


def _files(client: MlflowClient, run_id: str) -> set[str]:
    found, folders = set(), [None]
    while folders:
        for item in client.list_artifacts(run_id, folders.pop()):
            (folders.append(item.path) if item.is_dir else found.add(item.path))
    return found


def _assert_logged_alike(batched, other) -> None:
    """Params, metrics (bit for bit), the tags a run shares with its config, and the per-bar table."""
    assert batched.data.params == other.data.params
    assert batched.data.metrics.keys() == other.data.metrics.keys()
    for key, value in batched.data.metrics.items():
        assert value == other.data.metrics[key] or (math.isnan(value) and math.isnan(other.data.metrics[key])), key
    mine = {k: v for k, v in batched.data.tags.items() if k not in OWN_TAGS}
    assert mine == {k: v for k, v in other.data.tags.items() if k not in OWN_TAGS}
    pd.testing.assert_frame_equal(read_backtest_table(batched.info.artifact_uri, "portfolio_values"),
                                  read_backtest_table(other.info.artifact_uri, "portfolio_values"), check_exact=True)


@pytest.mark.slow
def test_batched_children_log_what_the_basic_launchers_jobs_log(tmp_path: Path, cli_env: dict,
                                                                 tracking_uri: str) -> None:
    grid = ["strategy.fast=5,10,20", "strategy.slow=40,60"]
    batch = run_cli(["runner", "-m", *SYNTHETIC, *grid, "hydra/launcher=batch", "hydra.launcher.figures=2",
                     "hydra.launcher.writer=1", "sweep_name=batched"], cli_env, tmp_path)  # written by its process
    assert batch.returncode == 0, batch.stderr[-3000:]
    assert "batch: 6/6 configurations done" in batch.stdout and "(6 FINISHED, 0 failed, 0 already run)" in batch.stdout
    basic = run_cli(["runner", "-m", *SYNTHETIC, *grid, "sweep_name=basic"], cli_env, tmp_path)
    assert basic.returncode == 0, basic.stderr[-3000:]
    runs = _runs(tracking_uri)
    batched, alone = _children(runs, "batched"), _children(runs, "basic")
    assert len(batched) == 6 and batched.keys() == alone.keys()
    client = MlflowClient(tracking_uri)
    ranked = sorted(batched.values(), key=lambda r: -r.data.metrics["val_sharpe_ratio"])
    # Both sweeps' winners hold everything a single run has, figures and table views included (the basic sweep's
    # drawn at its end from its logged tables); the other children of both, the Parquet records, results, config and
    # Hydra's files: no PNG, no JSON table view.
    winner = alone[ranked[0].data.tags["config_hash"]]
    full = _files(client, winner.info.run_id)
    assert {"figures/equity.png", "tearsheet.html", "backtest/portfolio_values.json"} <= full
    rest = {f for f in full if not f.startswith("figures/") and f != "tearsheet.html" and not (
        f.startswith("backtest/") and f.endswith(".json") and f != "backtest/results.json")}
    for rank, run in enumerate(ranked):
        other = alone[run.data.tags["config_hash"]]
        assert run.info.status == "FINISHED" and run.info.run_name == other.info.run_name
        assert run.data.tags["job_number"] == other.data.tags["job_number"]
        _assert_logged_alike(run, other)
        files = _files(client, run.info.run_id)
        if rank < 2:  # the best two
            assert files == full
            assert run.data.tags["mlflow.loggedArtifacts"] == winner.data.tags["mlflow.loggedArtifacts"]
        else:
            assert files == rest and "mlflow.loggedArtifacts" not in run.data.tags
        if rank > 0:
            assert _files(client, other.info.run_id) == rest and "mlflow.loggedArtifacts" not in other.data.tags
    bests = {b["sweep_name"]: b for b in (json.loads(f.read_text())
                                          for f in tmp_path.glob("outputs/multirun/*/*/best_run.json"))}
    best = bests["batched"]
    parent = client.get_run(best["parent_run_id"])
    assert best["winner"]["run_id"] == ranked[0].info.run_id and parent.data.metrics["n_trials"] == 6
    # The winner's statistics over its trials, the batch's from the returns it computed, the basic sweep's from the
    # tables its jobs logged: the same numbers
    batched_stats, basic_stats = ({k: v for k, v in bests[name]["trials"].items() if k != "scope"}
                                  for name in ("batched", "basic"))
    assert batched_stats.keys() == basic_stats.keys() and {"pbo", "spa_pvalue", "deflated_sharpe_ratio",
                                                           "n_trials_effective"} <= batched_stats.keys()
    assert batched_stats == basic_stats


@pytest.mark.slow
def test_a_bad_configuration_fails_alone_and_a_relaunch_resumes(tmp_path: Path, cli_env: dict,
                                                                tracking_uri: str) -> None:
    args = ["runner", "-m", *SYNTHETIC, "strategy.fast=5,50,10", "strategy.slow=40", "hydra/launcher=batch",
            "hydra.launcher.writer=1", "sweep_name=grid"]
    first = run_cli(args, cli_env, tmp_path)
    assert first.returncode == 1  # as with the basic launcher: a failed job fails the sweep, after the winner
    assert "strategy.fast must be < strategy.slow, got fast=50, slow=40" in first.stderr
    assert "error: 1 job(s) failed" in first.stderr and "(2 FINISHED, 1 failed, 0 already run)" in first.stdout
    children = _children(_runs(tracking_uri), "grid")
    statuses = {r.data.tags["job_number"]: r.info.status for r in children.values()}
    assert statuses == {"0": "FINISHED", "1": "FAILED", "2": "FINISHED"}
    failed = next(r for r in children.values() if r.info.status == "FAILED")
    assert "fast must be < strategy.slow" in failed.data.tags["error"] and failed.data.params["strategy.fast"] == "50"
    again = run_cli(args, cli_env, tmp_path)
    assert again.returncode == 1 and "(0 FINISHED, 1 failed, 2 already run)" in again.stdout
    runs = _runs(tracking_uri)
    pointers = [r for r in runs if "resumed_from" in r.data.tags]
    assert len(pointers) == 2 and {p.data.tags["resumed_from"] for p in pointers} == {
        r.info.run_id for r in children.values() if r.info.status == "FINISHED"}
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_a_sweep_launched_from_a_script_is_not_launched_again_by_the_writer(tmp_path: Path, cli_env: dict,
                                                                          tracking_uri: str) -> None:
    """A script without ``if __name__ == "__main__"``: a spawned writer would run it again (a second sweep), so
    its runs are written from the launching process."""
    script = tmp_path / "my_sweep.py"
    args = ["runner", "-m", *SYNTHETIC, "strategy.fast=5,10", "strategy.slow=40", "hydra/launcher=batch",
            "hydra.launcher.writer=1", "sweep_name=scripted"]
    script.write_text(f"import runpy, sys\nsys.argv = {args!r}\nrunpy.run_module('runner', run_name='__main__')\n")
    done = subprocess.run([sys.executable, str(script)], env=cli_env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _runs(tracking_uri)
    assert len([r for r in runs if r.data.tags.get("runner.role") == "sweep_parent"]) == 1
    assert len(_children(runs, "scripted")) == 2 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_jobs_it_cannot_batch_run_as_the_basic_launcher_runs_them(tmp_path: Path, cli_env: dict,
                                                                  tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", *SYNTHETIC, "strategy.fast=5,10", "strategy.slow=40",
                    "evaluation=holdout,walk_forward", "hydra/launcher=batch"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch: 2/2 configurations done" in done.stdout  # the holdout pair; walk-forward jobs one by one
    assert sum("val_sharpe_ratio" in line or "oos_sharpe_ratio = " in line for line in done.stdout.splitlines()) >= 2
    runs = [r for r in _runs(tracking_uri) if r.data.tags.get("runner.role") != "sweep_parent"]
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    walk = [r for r in runs if "walk_forward" in r.info.run_name]
    assert len(walk) == 2 and all("oos_sharpe_ratio" in r.data.metrics for r in walk)


@pytest.mark.slow
def test_a_400_configuration_grid_on_sp500_matches_single_runs(tmp_path: Path, cli_env: dict,
                                                                tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", "+strategy=sma_crossover", "model=none", "strategy.fast=range(5,25)",
                    "strategy.slow=range(30,230,10)", "hydra/launcher=batch", "sweep_name=grid400"], cli_env,
                   tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _runs(tracking_uri)
    children = _children(runs, "grid400")
    assert len(children) == 400 and {r.info.status for r in children.values()} == {"FINISHED"}
    [parent] = [r for r in runs if r.data.tags.get("runner.role") == "sweep_parent"]
    assert parent.data.metrics["n_trials"] == 400
    for run in random.Random(0).sample(sorted(children.values(), key=lambda r: r.info.run_id), 3):
        fast, slow = run.data.params["strategy.fast"], run.data.params["strategy.slow"]
        single = run_cli(["runner", "+strategy=sma_crossover", "model=none", f"strategy.fast={fast}",
                          f"strategy.slow={slow}", f"run_name=single-{fast}-{slow}"], cli_env, tmp_path)
        assert single.returncode == 0, single.stderr[-3000:]
        [alone] = [r for r in _runs(tracking_uri) if r.info.run_name == f"single-{fast}-{slow}"]
        _assert_logged_alike(run, alone)


def _pixels(client: MlflowClient, run_id: str, tmp_path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(client.download_artifacts(run_id, "figures/equity.png", str(tmp_path))))


@pytest.mark.slow
def test_a_rule_sweep_draws_its_winners_figures_and_any_runs_on_request(tmp_path: Path, cli_env: dict,
                                                                        tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", *SYNTHETIC, "strategy.fast=5,10", "strategy.slow=40"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    children = sorted(_children(_runs(tracking_uri), _runs(tracking_uri)[0].data.tags["sweep_name"]).values(),
                      key=lambda r: -r.data.metrics["val_sharpe_ratio"])
    winner, other = children
    assert {"figures/equity.png", "tearsheet.html"} <= _files(client, winner.info.run_id)  # drawn at the sweep's end
    assert not [f for f in _files(client, other.info.run_id) if f.startswith("figures/") or f == "tearsheet.html"]
    assert "mlflow.loggedArtifacts" in client.get_run(winner.info.run_id).data.tags
    assert "mlflow.loggedArtifacts" not in other.data.tags  # a child logs Parquet tables only
    drawn = run_cli(["runner.report", "--figures", other.info.run_id], cli_env, tmp_path)
    views = "backtest/trades.json, backtest/fills.json, backtest/portfolio_values.json"
    assert drawn.returncode == 0 and drawn.stdout.strip() == (f"logged figures/equity.png, tearsheet.html, {views} "
                                                              f"into run {other.info.run_id}")
    assert _files(client, other.info.run_id) == _files(client, winner.info.run_id)  # all its single run holds
    shown = json.loads(client.get_run(other.info.run_id).data.tags["mlflow.loggedArtifacts"])
    assert [v["path"] for v in shown] == views.split(", ")
    view = json.loads(Path(client.download_artifacts(other.info.run_id, "backtest/portfolio_values.json",
                                                     str(tmp_path))).read_text())
    pd.testing.assert_series_equal(pd.DataFrame(view["data"], columns=view["columns"])["equity"],
                                  read_backtest_table(other.info.artifact_uri, "portfolio_values")["equity"],
                                  check_exact=True, check_names=False)
    page = Path(client.download_artifacts(winner.info.run_id, "tearsheet.html", str(tmp_path))).read_text()
    assert "Monthly and yearly returns" in page and "round trips closed in the segment" in page
    assert "<td class=l>information_ratio</td>" in page  # the metrics come back from the run's logged ones
    for run in (winner, other):  # pixel for pixel what the run alone draws
        fast = run.data.params["strategy.fast"]
        single = run_cli(["runner", *SYNTHETIC, f"strategy.fast={fast}", "strategy.slow=40", f"run_name=alone{fast}"],
                         cli_env, tmp_path)
        assert single.returncode == 0, single.stderr[-3000:]
        [alone] = [r for r in _runs(tracking_uri) if r.info.run_name == f"alone{fast}"]
        (tmp_path / run.info.run_id).mkdir()
        (tmp_path / alone.info.run_id).mkdir()
        assert np.array_equal(_pixels(client, run.info.run_id, tmp_path / run.info.run_id),
                              _pixels(client, alone.info.run_id, tmp_path / alone.info.run_id))
    refused = run_cli(["runner.report", "--figures", "0" * 32], cli_env, tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --figures 000")
