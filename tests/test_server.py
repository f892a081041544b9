"""Against a real MLflow server on PostgreSQL (started by .ci/tracking_server.sh, loopback only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from runner.data.series import bundled_bars
from tests.conftest import run_cli
from tests.test_races import FAST, check_sweep, start_together

SERVER = os.environ.get("RUNNER_TEST_SERVER_URI")
pytestmark = [pytest.mark.server,
              pytest.mark.skipif(not SERVER, reason="set RUNNER_TEST_SERVER_URI (.ci/tracking_server.sh start)")]


def test_four_job_joblib_sweep_against_the_server(tmp_path: Path, cli_env: dict) -> None:
    experiment = f"server_sweep_{tmp_path.name}"
    env = {**cli_env, "MLFLOW_TRACKING_URI": SERVER}
    done = run_cli(["runner", "-m", "+strategy=momentum", "model=none", "data.start=2012-01-01",
                    f"experiment_name={experiment}", "strategy.lookback=5,10,20,40",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "View run" not in done.stdout  # MLflow's own link per run: the runner prints its links once
    best = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    client = MlflowClient(SERVER)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == best["parent_run_id"]]
    assert len(runs) == 5 and len(children) == 4  # one parent, four children, no duplicates
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["strategy.lookback"] for r in children) == ["10", "20", "40", "5"]
    winner = max(children, key=lambda r: r.data.metrics["val_sharpe_ratio"])
    assert best["winner"]["run_id"] == winner.info.run_id
    tables = {a.path for a in client.list_artifacts(winner.info.run_id, "backtest")}
    assert "backtest/portfolio_values.json" in tables


def test_two_sweeps_started_together_against_the_server_keep_their_own_runs(tmp_path: Path, cli_env: dict) -> None:
    env = {**cli_env, "MLFLOW_TRACKING_URI": SERVER}
    names = [f"race_a_{tmp_path.name}", f"race_b_{tmp_path.name}"]
    done = start_together([["runner", "-m", *FAST, "strategy.lookback=5,20", f"experiment_name={names[0]}"],
                           ["runner", "-m", *FAST, "strategy.lookback=10,30", f"experiment_name={names[1]}",
                            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]], env, tmp_path)
    for name, result in zip(names, done, strict=True):
        check_sweep(MlflowClient(SERVER), name, result, 2, tmp_path)


def test_register_and_clean_on_the_server(tmp_path: Path, cli_env: dict, capsys: pytest.CaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from runner import clean, report
    from runner.logger import MLflowLogger

    experiment = f"server_clean_{tmp_path.name}"
    done = run_cli(["runner", "+strategy=momentum", "model=none", "data.start=2012-01-01", "run_name=kept",
                    f"experiment_name={experiment}"], {**cli_env, "MLFLOW_TRACKING_URI": SERVER}, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    logger = MLflowLogger(experiment, SERVER)
    ids = {"kept": logger.client.search_runs([logger.experiment_id])[0].info.run_id}
    for name, status in (("failed", "FAILED"), ("killed", "KILLED")):
        logger.start_run(run_name=name)
        logger.log_metrics({"val_sharpe_ratio": {"failed": 9.0, "killed": 8.0}[name]})  # never rank: not FINISHED
        logger.log_model(torch.nn.Sequential(torch.nn.Linear(3, 1)), "model", input_example=torch.zeros(2, 3))
        logger.log_text("x" * 20_000, "backtest/portfolio_values.json")
        ids[name] = logger.run_id
        logger.end_run(status)
    client = MlflowClient(SERVER)
    assert report.main(["--tracking-uri", SERVER, "--experiment", experiment, "--register", experiment]) == 0
    assert report.main(["--tracking-uri", SERVER, "--experiment", experiment, "--register", experiment]) == 2
    versions = client.search_model_versions(f"name = '{experiment}'")
    assert len(versions) == 1 and versions[0].run_id == ids["kept"]
    import mlflow.pyfunc  # the strategy packaged on the server loads back from it, pickle off, and trades

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    mlflow.set_tracking_uri(SERVER)
    bars = pd.read_parquet(client.download_artifacts(ids["kept"], "backtest/portfolio_values.parquet", str(tmp_path)))
    served = mlflow.pyfunc.load_model(f"models:/{experiment}/1").predict(
        bundled_bars("sp500").loc["2012-01-01":].rename_axis("date").reset_index())
    np.testing.assert_allclose(served["weight"].to_numpy(), bars["weight"].to_numpy(), rtol=0, atol=1e-9)

    assert clean.main(["--tracking-uri", SERVER, "--experiment", experiment, "--status", "FAILED,KILLED",
                       "--yes"]) == 2
    assert "needs --backend-store-uri" in capsys.readouterr().err
    root = Path(os.environ["RUNNER_TEST_SERVER_ARTIFACTS"])
    on_disk = {name: [p for p in root.rglob(run_id) if p.is_dir()] for name, run_id in ids.items()}
    assert all(on_disk.values())  # the server keeps every run's artifacts under its own root
    assert clean.main(["--tracking-uri", SERVER, "--experiment", experiment, "--status", "FAILED,KILLED",
                       "--backend-store-uri", os.environ["RUNNER_TEST_SERVER_DB"], "--yes"]) == 0
    from mlflow.entities import ViewType

    left = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              run_view_type=ViewType.ALL)
    assert [r.info.run_id for r in left] == [ids["kept"]]  # purged from PostgreSQL, not only soft-deleted
    for name in ("failed", "killed"):
        assert not any(any(p.rglob("*.json")) for p in on_disk[name] if p.exists())
    assert any(on_disk["kept"][0].rglob("*.json"))


def test_rankings_on_postgresql_are_the_same_by_either_route(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """RUNNER_SERVER_DATABASE=postgresql ranks in the store (MLflow's order_by): the same runs in the same order as
    the narrowing, through the API and through runner.report."""
    import warnings

    from runner import report
    from runner.logger import MLflowLogger
    from runner.tracking.queries import SERVER_DATABASE_ENV, ranks_in_store
    from tests.test_logger import ranked_both_ways

    logger = MLflowLogger(f"server_routes_{tmp_path.name}", SERVER)
    for i, value in enumerate([0.5, -1.0, 0.5, float("nan"), 2.0, 0.5, 1e-7, -3.0, 2.0, 0.25]):
        logger.start_run()
        logger.log_params({"group": "a" if i % 2 else "b"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logger.log_metrics({"val_sharpe_ratio": value})
        logger.end_run("FAILED" if i == 4 else "FINISHED")
    ranked_both_ways(logger)
    capsys.readouterr()  # MLflow's "View run" lines for the runs above
    printed = {}
    for named in ("", "postgresql"):
        monkeypatch.setenv(SERVER_DATABASE_ENV, named)
        assert ranks_in_store(logger.client) is bool(named)
        assert report.main(["--tracking-uri", SERVER, "--experiment", logger.experiment_name, "--top", "5",
                            "--all-versions", "--json"]) == 0
        printed[named] = json.loads(capsys.readouterr().out)
    assert printed[""] == printed["postgresql"]
    assert [row["run_id"] for row in printed[""]["runs"]][:1] == [
        logger.get_best_run("val_sharpe_ratio", all_versions=True)["run_id"]]
