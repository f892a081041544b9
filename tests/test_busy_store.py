"""A sqlite store locked by another process's write for longer than MLflow's own 20 s busy timeout: a run waits
and retries (bounded), ends FINISHED, and past the bound says that sqlite cannot serve the load."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.tracking import store
from runner.tracking.logger import MLflowLogger

pytestmark = pytest.mark.slow
HOLD = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


def _lock(database: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(database), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_run_waits_out_a_lock_longer_than_mlflows_busy_timeout(tmp_path: Path, tracking_uri: str) -> None:
    logger = MLflowLogger("busy", tracking_uri)
    logger.start_run("waits")
    holder = _lock(tmp_path / "mlflow.db", 26.0)
    started = time.monotonic()
    logger.log_metrics({"sharpe_ratio": 1.5})  # MLflow alone gives up after 20 s: "database is locked"
    waited = time.monotonic() - started
    logger.end_run()
    holder.wait(timeout=30)
    run = MlflowClient(tracking_uri).get_run(logger.client.search_runs([logger.experiment_id])[0].info.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["sharpe_ratio"] == 1.5
    assert 20 < waited < 40


def test_past_the_bound_one_line_points_at_a_server(tmp_path: Path, tracking_uri: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "LOCKED_WAIT_SECONDS", 1.0)
    logger = MLflowLogger("busy", tracking_uri)
    logger.start_run("gives up")
    holder = _lock(tmp_path / "mlflow.db", 45.0)
    try:
        with pytest.raises(store.StoreBusy, match=r"sqlite store stayed locked .* log to a tracking server instead "
                                                  r"\(tracking=server"):
            logger.log_metrics({"sharpe_ratio": 1.5})
    finally:
        holder.kill()
        holder.wait(timeout=30)
    logger.end_run("FAILED")
    assert MlflowClient(tracking_uri).search_runs([logger.experiment_id])[0].info.status == "FAILED"


def test_runs_and_a_sweep_at_once_on_one_store_all_finish(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    base = [sys.executable, "-m", "runner", "+strategy=momentum", "data=synthetic", "data.n_bars=800"]
    commands = [[*base, "model=linear", "trainer.epochs=2", f"seed={seed}"] for seed in range(3)]
    sweep = "strategy.lookback=" + ",".join(map(str, range(2, 10)))
    commands.append([sys.executable, "-m", "runner", "-m", "+strategy=momentum", "model=none", "data=synthetic",
                     "data.n_bars=800", "hydra/launcher=joblib", sweep])
    processes = [subprocess.Popen(command, env=cli_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True) for command in commands]
    errors = [process.communicate(timeout=600)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], [e[-1500:] for e in errors]
    assert not any("locked" in e for e in errors)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id], max_results=100)
    assert len(runs) == 3 + 1 + 8 and {r.info.status for r in runs} == {"FINISHED"}
