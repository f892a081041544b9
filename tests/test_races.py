"""Commands started in the same second, in the same directory, never share state (through the real CLI)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import run_cli

FAST = ["+strategy=momentum", "model=none", "data.start=2012-01-01"]
REPEATS = 3


def start_together(commands: list[list[str]], env: dict, cwd: Path) -> list[subprocess.CompletedProcess]:
    """Start every command at the same moment (just after a whole second, so that Hydra's ``${now:...}``
    resolves to the same second in each) and wait for all."""
    time.sleep(1.05 - time.time() % 1.0)
    processes = [subprocess.Popen([sys.executable, "-m", *command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for command in commands]
    outputs = [p.communicate(timeout=300) for p in processes]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, err)
            for p, (out, err) in zip(processes, outputs, strict=True)]


def experiment_runs(client: MlflowClient, name: str) -> list:
    return client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=1000)


def logged_overrides(client: MlflowClient, run, tmp_path: Path) -> list[str]:
    target = tmp_path / "downloads" / run.info.run_id
    target.mkdir(parents=True, exist_ok=True)
    return yaml.safe_load(Path(client.download_artifacts(run.info.run_id, ".hydra/overrides.yaml", str(target)))
                          .read_text())


def check_sweep(client: MlflowClient, name: str, done: subprocess.CompletedProcess, n_jobs: int,
                tmp_path: Path) -> None:
    """One sweep's records are its own: one parent, its children only, its own winner printed and saved."""
    assert done.returncode == 0, done.stderr[-3000:]
    runs = experiment_runs(client, name)
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep_parent"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r not in parents]
    assert len(children) == n_jobs and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    for child in children:
        overrides = logged_overrides(client, child, tmp_path)
        assert f"experiment_name={name}" in overrides and " ".join(overrides) == child.data.tags["overrides"]
    best = json.loads(Path(parents[0].data.tags["sweep_dir"], "best_run.json").read_text())
    assert best["parent_run_id"] == parents[0].info.run_id and f"run id {best['winner']['run_id']}" in done.stdout
    assert best["winner"]["run_id"] in {r.info.run_id for r in children}


@pytest.mark.slow
@pytest.mark.parametrize("second_launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["basic+basic", "basic+joblib"])
def test_two_sweeps_started_together_keep_their_own_runs(second_launcher, tmp_path: Path, cli_env: dict,
                                                          tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    for attempt in range(REPEATS):
        names = [f"A{attempt}", f"B{attempt}"]
        commands = [["runner", "-m", *FAST, "strategy.lookback=5,20,60", f"experiment_name={names[0]}"],
                    ["runner", "-m", *FAST, "strategy.lookback=10,30,50", f"experiment_name={names[1]}",
                     *second_launcher]]
        done = start_together(commands, cli_env, tmp_path)
        for name, result in zip(names, done, strict=True):
            check_sweep(client, name, result, 3, tmp_path)
    sweep_dirs = {r.data.tags["sweep_dir"] for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`runner.role` = 'sweep_parent'")}
    assert len(sweep_dirs) == 2 * REPEATS


@pytest.mark.slow
def test_two_runs_started_together_log_their_own_provenance(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    for attempt in range(REPEATS):
        commands = [["runner", *FAST, f"experiment_name=X{attempt}"],
                    ["runner", "+strategy=sma_crossover", "model=none", "data.start=2012-01-01",
                     f"experiment_name=Y{attempt}"]]
        for name, done in zip((f"X{attempt}", f"Y{attempt}"), start_together(commands, cli_env, tmp_path),
                              strict=True):
            assert done.returncode == 0, done.stderr[-2000:]
            (run,) = experiment_runs(client, name)
            overrides = logged_overrides(client, run, tmp_path)
            assert f"experiment_name={name}" in overrides and run.info.status == "FINISHED"
            assert run.data.tags["strategy"] == ("momentum" if name.startswith("X") else "sma_crossover")


@pytest.mark.slow
def test_a_sweep_folder_in_use_is_refused(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    shared = f"hydra.sweep.dir={tmp_path / 'my_sweep'}"
    first = subprocess.Popen([sys.executable, "-m", "runner", "-m", *FAST, "strategy.lookback=5,10,20,40,60",
                              "experiment_name=first", shared], cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "my_sweep" / ".mlflow_sweep.json"
    deadline = time.monotonic() + 120
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    second = run_cli(["runner", "-m", *FAST, "strategy.lookback=7,9", "experiment_name=second", shared], cli_env,
                     tmp_path)
    first_out, first_err = first.communicate(timeout=300)
    assert second.returncode == 2 and "in use by another running sweep" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    client = MlflowClient(tracking_uri)
    assert client.get_experiment_by_name("second") is None or not experiment_runs(client, "second")
    check_sweep(client, "first", subprocess.CompletedProcess([], first.returncode, first_out, first_err), 5, tmp_path)
    again = run_cli(["runner", "-m", *FAST, "strategy.lookback=7,9", "experiment_name=second", shared], cli_env,
                    tmp_path)  # once the first sweep is over, the folder may be reused
    check_sweep(client, "second", again, 2, tmp_path)


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_run_that_stale_cannot_find(tmp_path: Path, cli_env: dict,
                                                             tracking_uri: str) -> None:
    sweep = subprocess.Popen([sys.executable, "-m", "runner", "-m", "+strategy=momentum", "data.start=2012-01-01",
                              "trainer.epochs=100000", "trainer.patience=100000", "strategy.lookback=5,10"],
                             cwd=tmp_path, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import sqlite3

    db = Path(tracking_uri[len("sqlite:///"):])
    deadline = time.monotonic() + 120
    running = 0
    while running < 2 and time.monotonic() < deadline:  # the parent and its first child
        time.sleep(0.5)
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
                running = connection.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]
        except sqlite3.Error:
            pass
    sweep.send_signal(signal.SIGKILL)
    sweep.wait(timeout=30)
    marked = run_cli(["runner.report", "--stale", "--mark", "--json"], cli_env, tmp_path)
    assert marked.returncode == 0, marked.stderr
    client = MlflowClient(tracking_uri)
    runs = experiment_runs(client, "trading_experiment")
    assert len(json.loads(marked.stdout)["stale_runs"]) == 2 == len(runs)
    assert {r.info.status for r in runs} == {"KILLED"}
    assert any(r.data.tags.get("runner.role") == "sweep_parent" for r in runs)


@pytest.mark.slow
def test_the_report_and_clean_wait_for_a_store_whose_schema_a_run_is_creating(tmp_path: Path, cli_env: dict,
                                                                               tracking_uri: str) -> None:
    """A run holds the store's lock while it creates a fresh sqlite store's schema; ``runner.report`` and
    ``runner.clean`` started meanwhile wait for it: two processes creating one schema crash (either of them)."""
    from runner.tracking.store import store_lock

    db = Path(tracking_uri[len("sqlite:///"):])
    db.touch()  # what a run creating the schema has left so far: the file, no table yet
    with store_lock(tracking_uri):
        waiting = [subprocess.Popen([sys.executable, "-m", *command], cwd=tmp_path, env=cli_env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for command in (["runner.report"], ["runner.clean", "--status", "FAILED"])]
        time.sleep(10)  # both are started and at the store (they import in ~3 s)
        assert [p.poll() for p in waiting] == [None, None] and db.stat().st_size == 0  # waiting, the store untouched
    (_, report_err), (clean_out, clean_err) = [p.communicate(timeout=120) for p in waiting]
    assert waiting[0].returncode == 2 and "no experiment named 'trading_experiment'" in report_err, report_err
    assert waiting[1].returncode == 0 and "would delete 0 run(s)" in clean_out, clean_err
