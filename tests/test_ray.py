"""Sweeps on a real Ray cluster (``.ci/ray_cluster.sh``; in CI two nodes, the second in a network namespace of its
own) tracked on the PostgreSQL-backed MLflow server (``.ci/tracking_server.sh``): the launcher is Hydra's own
``hydra/launcher=ray``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli

SERVER = os.environ.get("RUNNER_TEST_SERVER_URI")
RAY = os.environ.get("RUNNER_TEST_RAY_ADDRESS")
DASHBOARD = os.environ.get("RUNNER_TEST_RAY_DASHBOARD")
NODE_NS = os.environ.get("RUNNER_TEST_RAY_NODE_NS")  # the worker node's network namespace (--nodes 2)
CLUSTER_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "ray_cluster.sh"
NEEDS = "set RUNNER_TEST_SERVER_URI and RUNNER_TEST_RAY_ADDRESS (.ci/tracking_server.sh, .ci/ray_cluster.sh)"
pytestmark = [pytest.mark.ray, pytest.mark.skipif(not (SERVER and RAY), reason=NEEDS)]

ON_RAY = ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={RAY}", "tracking=server", f"tracking.uri={SERVER}"]
QUICK = ["+strategy=momentum", "model=linear", "trainer.epochs=2", "data=synthetic", "data.n_bars=600"]
SLOW = ["+strategy=momentum", "model=mlp", "trainer.epochs=40", "trainer.patience=40", "data=synthetic",
        "data.n_bars=4000"]


def server_env(cli_env: dict) -> dict:
    return {k: v for k, v in cli_env.items() if k != "MLFLOW_TRACKING_URI"}  # the server comes from tracking.uri


def alive_nodes() -> dict[str, float]:
    """Ray's own answer: each live node's address and CPUs."""
    from ray.util.state import list_nodes

    return {n.node_ip: n.resources_total.get("CPU", 0.0) for n in list_nodes(address=DASHBOARD)
            if n.state == "ALIVE"}


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
    assert all("uri=" not in r.info.run_name for r in children)  # a job's name shows what it swept, not the store
    nodes = {r.data.tags["runner.ray_node"] for r in children}  # where each job ran: a node's address
    assert nodes == set(alive_nodes()), nodes  # in CI two nodes, and both ran jobs
    assert all(re.fullmatch(r"[0-9a-f.:]+", node) for node in nodes), nodes
    assert "runner.ray_node" not in parents[0].data.tags
    best = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    winner = max(children, key=lambda r: r.data.metrics["val_sharpe_ratio"])  # an independent query's answer
    assert best["winner"]["run_id"] == winner.info.run_id
    assert parents[0].data.tags["best_run_id"] == winner.info.run_id and best["jobs"] == 8


def wait_for_running_child(experiment: str, process: subprocess.Popen, timeout: float = 120, node: str = ""):
    """A child run RUNNING (on ``node`` when given)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        running = [r for r in runs_of(experiment) if r.info.status == "RUNNING" and "job_number" in r.data.tags
                   and (not node or r.data.tags.get("runner.ray_node") == node)]
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
    cpus = int(max(alive_nodes().values()))  # all of a node's CPUs for each job: 2 on one node, 1 on two
    process = launch(["-m", *SLOW, *ON_RAY, f"experiment_name={experiment}", "strategy.lookback=10,20,40",
                      f"+hydra.launcher.ray.remote.num_cpus={cpus}"], server_env(cli_env), tmp_path)
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
    assert {r.data.tags["runner.threads"] for r in children} == {str(cpus)}  # the CPUs Ray gave each job
    assert best["winner"]["run_id"] == max(children, key=lambda r: r.data.metrics["val_sharpe_ratio"]).info.run_id


def node_pids() -> list[str]:
    """The processes of the worker node's namespace: none once a test has killed the node."""
    return subprocess.run(["ip", "netns", "pids", NODE_NS], capture_output=True, text=True, check=True).stdout.split()


def wait_until(alive: bool, address: str, timeout: float = 120) -> None:
    """Until Ray lists the node at address as alive (or no longer alive: its health checks take a while to fail)."""
    deadline = time.monotonic() + timeout
    while (address in alive_nodes()) != alive:
        assert time.monotonic() < deadline, f"Ray node {address} still {'down' if alive else 'alive'}"
        time.sleep(1)


@pytest.fixture
def worker_node() -> Iterator[str]:
    """The two-node cluster's worker node, up: its address. A test that killed it gets it back afterwards, once
    Ray has marked the dead one (its check of Ray's node list alone raced that: the next test found one node)."""
    if not NODE_NS:
        pytest.skip("needs the two-node cluster: source .ci/ray_cluster.sh start --nodes 2")
    address = os.environ["RUNNER_TEST_NODE_HOST"]
    if not node_pids():
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "add-node"], check=True, capture_output=True)
    wait_until(True, address)
    yield address
    if not node_pids():
        wait_until(False, address)
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "add-node"], check=True, capture_output=True)
        wait_until(True, address)


def test_a_node_lost_mid_sweep_its_job_reruns_on_the_other_node(tmp_path: Path, cli_env: dict,
                                                                 worker_node: str) -> None:
    """Every process of the worker node (its raylet, its Ray workers, the job) killed at once, as when a machine
    vanishes: the lost attempt's run ends FAILED tagged runner.lost, Ray reruns the job on the head node, the
    rerun FINISHES, the winner stands over the finished jobs, the sweep exits 1 naming the attempt."""
    experiment = f"ray_node_{uuid.uuid4().hex[:8]}"  # unique on a long-lived server
    process = launch(["-m", *SLOW, *ON_RAY, f"experiment_name={experiment}", "strategy.lookback=10,20,40"],
                     server_env(cli_env), tmp_path)
    victim = wait_for_running_child(experiment, process, node=worker_node)
    pids = node_pids()
    assert victim.data.tags["runner.pid"] in pids  # the job ran inside the worker node's namespace
    subprocess.run(["kill", "-9", *pids], check=True)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1, stderr[-3000:]
    name = f"{victim.data.tags['sweep_name']}-{victim.data.tags['job_number']}"
    assert f"{name} (an attempt's process died mid-job: run {victim.info.run_id} FAILED; the job ran again)" in stderr
    runs = runs_of(experiment)
    assert "RUNNING" not in {r.info.status for r in runs}
    lost = next(r for r in runs if r.info.run_id == victim.info.run_id)
    assert lost.info.status == "FAILED" and f"Ray node {worker_node}" in lost.data.tags["runner.lost"]
    rerun = next(r for r in runs if r.data.tags.get("job_number") == victim.data.tags["job_number"]
                 and r.info.run_id != victim.info.run_id)
    assert rerun.info.status == "FINISHED" and rerun.data.tags["runner.ray_node"] == RAY.rsplit(":", 1)[0]
    best = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    assert best["jobs"] == 3 and best["failed_jobs"] == [] and list(best["lost_attempts"]) == [name]
    finished = [r for r in runs if r.data.tags.get("job_number") and r.info.status == "FINISHED"]
    assert len(finished) == 3
    assert best["winner"]["run_id"] == max(finished, key=lambda r: r.data.metrics["val_sharpe_ratio"]).info.run_id


def test_jobs_on_a_node_that_shares_no_files_keep_their_folders_on_its_disk(tmp_path: Path, cli_env: dict,
                                                                             worker_node: str) -> None:
    """The worker node cannot see the launch folder (an empty tmpfs hides it there): its jobs write their Hydra
    folders on its own disk, the head node's in the launch folder; every job is tracked the same on the server."""
    experiment = f"ray_files_{uuid.uuid4().hex[:8]}"  # unique on a long-lived server
    done = run_cli(["runner", "-m", *QUICK, *ON_RAY, f"experiment_name={experiment}",
                    "strategy.lookback=5,10,20,40"], server_env(cli_env), tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    children = [r for r in runs_of(experiment) if "job_number" in r.data.tags]
    assert {r.info.status for r in children} == {"FINISHED"} and len(children) == 4
    assert {r.data.tags["runner.ray_node"] for r in children} == {RAY.rsplit(":", 1)[0], worker_node}  # both ran jobs
    sweep_dir = next(tmp_path.glob("outputs/multirun/*/*"))
    node_pid = node_pids()[0]
    for run in children:
        folder = sweep_dir / run.data.tags["job_number"]
        on_node = subprocess.run(["nsenter", "-t", node_pid, "-m", "test", "-d", str(folder)]).returncode == 0
        on_worker = run.data.tags["runner.ray_node"] == worker_node
        assert (folder.is_dir(), on_node) == ((False, True) if on_worker else (True, False)), run.data.tags


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
