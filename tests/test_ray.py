"""Sweeps on a real Ray cluster on 127.0.0.1 (``.ci/ray_cluster.sh``) tracked on the PostgreSQL-backed MLflow
server (``.ci/tracking_server.sh``): the launcher is Hydra's own ``hydra/launcher=ray``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli

SERVER = os.environ.get("RUNNER_TEST_SERVER_URI")
RAY = os.environ.get("RUNNER_TEST_RAY_ADDRESS")
DASHBOARD = os.environ.get("RUNNER_TEST_RAY_DASHBOARD")
NEEDS = "set RUNNER_TEST_SERVER_URI and RUNNER_TEST_RAY_ADDRESS (.ci/tracking_server.sh, .ci/ray_cluster.sh)"
pytestmark = [pytest.mark.ray, pytest.mark.skipif(not (SERVER and RAY), reason=NEEDS)]

ON_RAY = ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={RAY}", "tracking=server", f"tracking.uri={SERVER}"]
QUICK = ["+strategy=momentum", "model=linear", "trainer.epochs=2", "data=synthetic", "data.n_bars=600"]
SLOW = ["+strategy=momentum", "model=mlp", "trainer.epochs=40", "trainer.patience=40", "data=synthetic",
        "data.n_bars=4000"]


def server_env(cli_env: dict) -> dict:
    return {k: v for k, v in cli_env.items() if k != "MLFLOW_TRACKING_URI"}  # the server comes from tracking.uri


def runs_of(experiment: str) -> list:
    client = MlflowClient(SERVER)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_an_eight_job_sweep_on_the_cluster_is_tracked_on_the_server(tmp_path: Path, cli_env: dict) -> None:
    experiment = f"ray_sweep_{uuid.uuid4().hex[:8]}"  # unique on a long-lived server
    done = run_cli(["runner", "-m", *QUICK, *ON_RAY, f"experiment_name={experiment}",
                    "strategy.lookback=5,10,20,40", "strategy.long_only=true,false"], server_env(cli_env), tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = runs_of(experiment)
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep_parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 8 and len(runs) == 9
    assert {r.info.status for r in runs} == {"FINISHED"}
    launcher_pid = parents[0].data.tags["runner.pid"]
    assert all(r.data.tags["runner.pid"] != launcher_pid for r in children)  # each ran in a Ray worker
    assert {r.data.tags["runner.threads"] for r in children} == {"1"}  # Ray's default: 1 CPU per job
    nodes = {r.data.tags["runner.ray_node"] for r in children}  # where each job ran: a node's address
    assert len(nodes) >= 1 and all(re.fullmatch(r"[0-9a-f.:]+", node) for node in nodes), nodes
    assert "runner.ray_node" not in parents[0].data.tags
    best = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    winner = max(children, key=lambda r: r.data.metrics["val_sharpe_ratio"])  # an independent query's answer
    assert best["winner"]["run_id"] == winner.info.run_id
    assert parents[0].data.tags["best_run_id"] == winner.info.run_id and best["jobs"] == 8


def wait_for_running_child(experiment: str, process: subprocess.Popen, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        running = [r for r in runs_of(experiment) if r.info.status == "RUNNING" and "job_number" in r.data.tags]
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no child run started")


def launch(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_worker_that_dies_mid_job_is_rerun_and_named(tmp_path: Path, cli_env: dict) -> None:
    """SIGKILL (no handler runs) to the worker running a job: its run ends FAILED (tagged runner.lost) when Ray
    runs the job again, the rerun FINISHES, the other jobs and the winner report stand, and the sweep exits 1
    naming the job."""
    experiment = f"ray_death_{uuid.uuid4().hex[:8]}"  # unique on a long-lived server
    process = launch(["-m", *SLOW, *ON_RAY, f"experiment_name={experiment}", "strategy.lookback=10,20,40",
                      "+hydra.launcher.ray.remote.num_cpus=2"], server_env(cli_env), tmp_path)
    victim = wait_for_running_child(experiment, process)
    os.kill(int(victim.data.tags["runner.pid"]), signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr[-3000:]
    name = f"{victim.data.tags['sweep_name']}-{victim.data.tags['job_number']}"  # the job's label
    assert f"{name} (an attempt's process died mid-job: run {victim.info.run_id} FAILED; the job ran again)" in stderr
    runs = runs_of(experiment)
    assert "RUNNING" not in {r.info.status for r in runs}
    lost = next(r for r in runs if r.info.run_id == victim.info.run_id)
    assert lost.info.status == "FAILED" and "died mid-job" in lost.data.tags["runner.lost"]
    attempts = [r for r in runs if r.data.tags.get("job_number") == victim.data.tags["job_number"]]
    assert sorted(r.info.status for r in attempts) == ["FAILED", "FINISHED"]
    best = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    assert best["jobs"] == 3 and best["failed_jobs"] == [] and list(best["lost_attempts"]) == [name]
    children = [r for r in runs if r.data.tags.get("job_number") and "runner.lost" not in r.data.tags]
    assert {r.data.tags["runner.threads"] for r in children} == {"2"}  # the CPUs Ray gave each job
    assert best["winner"]["run_id"] == max(children, key=lambda r: r.data.metrics["val_sharpe_ratio"]).info.run_id


def test_ctrl_c_ends_the_sweep_and_its_running_children_killed_and_leaves_no_ray_task(tmp_path: Path,
                                                                                     cli_env: dict) -> None:
    experiment = f"ray_stop_{uuid.uuid4().hex[:8]}"  # unique on a long-lived server
    process = launch(["-m", *SLOW, *ON_RAY, f"experiment_name={experiment}", "strategy.lookback=10,20,40,60"],
                     server_env(cli_env), tmp_path)
    wait_for_running_child(experiment, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted (received SIGINT")
    runs = runs_of(experiment)
    parent = next(r for r in runs if r.data.tags.get("runner.role") == "sweep_parent")
    assert parent.info.status == "KILLED", stderr[-3000:]
    statuses = [r.info.status for r in runs if "job_number" in r.data.tags]
    assert "RUNNING" not in statuses and "KILLED" in statuses
    from ray.util.state import list_tasks

    deadline = time.time() + 30  # Ray stops a gone driver's tasks within seconds
    while list_tasks(address=DASHBOARD, filters=[("state", "=", "RUNNING")]) and time.time() < deadline:
        time.sleep(1)
    assert not list_tasks(address=DASHBOARD, filters=[("state", "=", "RUNNING")])
    time.sleep(3)  # and no job was left behind to end its run later
    assert "RUNNING" not in {r.info.status for r in runs_of(experiment)}


def test_a_local_store_is_refused_before_any_job(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", *QUICK, "hydra/launcher=ray", f"hydra.launcher.ray.init.address={RAY}",
                    "strategy.lookback=5,10"], cli_env, tmp_path)
    assert done.returncode == 2
    assert "runs jobs on the cluster's machines, but the tracking store sqlite:" in done.stderr
    assert "Use tracking=server tracking.uri=http://SERVER:5000" in done.stderr
    import mlflow

    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not list(tmp_path.glob("outputs/multirun/*/*/0"))  # no job folder either
