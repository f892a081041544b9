"""Sweeps through the real CLI (Hydra multirun) and the best-run report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import run_cli, wait_for_running

FAST = ["model=none", "data.start=2010-01-01", "data.end=2014-12-31"]
SYNTHETIC = ["model=none", "data=synthetic", "data.n_bars=600"]


def _sweep_dir(launch: Path) -> Path:
    found = sorted(launch.glob("outputs/multirun/*/*/best_run.json"))
    assert len(found) == 1, found
    return found[0].parent


def _children(tracking_uri: str, parent_id: str):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("trading_experiment")
    return client, client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


@pytest.mark.slow
def test_three_job_sweep_winner_matches_an_independent_query(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    sweep = ["runner", "-m", "+strategy=momentum", *FAST, "strategy.lookback=5,20,60"]
    # a fixed value Hydra's sweeper quotes again per job (tracking.uri=sqlite\:///...) is not part of a job's name
    done = run_cli([*sweep, "sweep_name=three", f"tracking.uri={tracking_uri}"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    best = json.loads((_sweep_dir(tmp_path) / "best_run.json").read_text())
    client, children = _children(tracking_uri, best["parent_run_id"])
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}
    # each run says what it is: the group choices and the swept value (the console calls the jobs three-0, ...)
    assert sorted(r.info.run_name for r in children) == [f"momentum-none-sp500 lookback={v}" for v in (20, 5, 60)]
    assert sorted(r.data.tags["job_number"] for r in children) == ["0", "1", "2"]
    independent = max(children, key=lambda r: r.data.metrics["val_sharpe_ratio"])
    assert best["winner"]["run_id"] == independent.info.run_id
    assert best["winner"]["params"] == {"strategy.lookback": independent.data.params["strategy.lookback"]}
    assert best["winner"]["run_id"] in done.stdout and "reproduce: python -m runner" in done.stdout
    assert "1/3 jobs done" in done.stdout and "3/3 jobs done" in done.stdout and "left" in done.stdout
    sweep_dir = _sweep_dir(tmp_path)
    assert f"saved: {(sweep_dir / 'best_run.json').absolute()}" in done.stdout
    assert f"/#/experiments/{children[0].info.experiment_id}?workflowType=machine_learning" in done.stdout
    assert f"the sweep: http://127.0.0.1:5000/#/experiments/{children[0].info.experiment_id}/runs/" \
           f"{best['parent_run_id']}" in done.stdout
    parent = client.get_run(best["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["best_run_id"] == independent.info.run_id
    assert set(parent.data.metrics) == {"n_trials", "winner_deflated_sharpe_ratio", "pbo", "n_trials_effective",
                                        "winner_deflated_sharpe_ratio_effective", "spa_pvalue",
                                        "reality_check_pvalue"}  # no segment metric:
    # parents never rank
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"best_run.json", "metrics",
                                                                           "sweep_val_sharpe_ratio.png"}
    meanings = json.loads(Path(client.download_artifacts(parent.info.run_id, "metrics/descriptions.json",
                                                         str(tmp_path))).read_text())
    assert set(meanings) == set(parent.data.metrics) and "(undocumented)" not in json.dumps(meanings)
    # The report agrees, as a table and as JSON, and restricted to the sweep.
    report = run_cli(["runner.report", "--json", "--top", "3", "--sweep", best["sweep_name"]], cli_env, tmp_path)
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)["runs"]
    assert [r["run_id"] for r in rows][0] == independent.info.run_id and len(rows) == 3
    values = [r["val_sharpe_ratio"] for r in rows]
    assert values == sorted(values, reverse=True)
    table = run_cli(["runner.report", "--top", "2"], cli_env, tmp_path)
    assert table.returncode == 0 and independent.info.run_name in table.stdout.splitlines()[2]
    # Resume: the same sweep again skips all three configs and still names the same winner...
    again = run_cli([*sweep, "sweep_name=three"], cli_env, tmp_path)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3
    assert independent.info.run_id in again.stdout
    # ... a new sweep runs everything (it never silently reuses another sweep's runs) ...
    fresh = run_cli([*sweep, "sweep_name=other"], cli_env, tmp_path)
    assert fresh.returncode == 0 and "skipped" not in fresh.stdout
    # ... unless asked to, and then it says so up front.
    reused = run_cli([*sweep, "sweep_name=third", "reuse_runs=true"], cli_env, tmp_path)
    assert reused.returncode == 0 and reused.stdout.count("skipped") == 3
    assert reused.stdout.index("reuse_runs=true") < reused.stdout.index("skipped")


@pytest.mark.slow
def test_one_bad_job_loses_nothing_and_fails_the_sweep(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", "+strategy=momentum", *FAST, "strategy.lookback=10,0,30"], cli_env, tmp_path)
    assert done.returncode == 1
    best = json.loads((_sweep_dir(tmp_path) / "best_run.json").read_text())
    client, children = _children(tracking_uri, best["parent_run_id"])
    statuses = {f"{best['sweep_name']}-{r.data.tags['job_number']}": r.info.status for r in children}
    bad = f"{best['sweep_name']}-1"
    assert statuses.pop(bad) == "FAILED" and set(statuses.values()) == {"FINISHED"}
    assert best["failed_jobs"] == [bad] and bad in done.stderr and "lookback must be >= 1" in done.stderr
    failed_run = next(r for r in children if r.data.tags["job_number"] == "1")
    assert failed_run.info.run_name == "momentum-none-sp500 lookback=0"
    assert best["winner"]["run_id"] != failed_run.info.run_id
    assert "lookback must be >= 1" in failed_run.data.tags["error"]


@pytest.mark.slow
def test_joblib_sweep_with_two_workers_loses_no_run(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", "+strategy=momentum,sma_crossover", *FAST, "strategy.long_only=true,false",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.launcher.prefer=processes",
                    "hydra.launcher.backend=loky"], cli_env, tmp_path)  # hydra-joblib-launcher's own options
    assert done.returncode == 0, done.stderr
    best = json.loads((_sweep_dir(tmp_path) / "best_run.json").read_text())
    _, children = _children(tracking_uri, best["parent_run_id"])
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert len({r.data.tags["config_hash"] for r in children}) == 4


def test_report_errors_are_clear(tmp_path: Path, cli_env: dict, tracking_uri: str,
                                 capsys: pytest.CaptureFixture) -> None:
    from runner import report
    from runner.logger import MLflowLogger

    logger = MLflowLogger("trading_experiment", tracking_uri)
    with logger:
        logger.log_metrics({"val_sharpe_ratio": 1.0})
    done = run_cli(["runner.report", "--experiment", "nope"], cli_env, tmp_path)  # the CLI itself, once
    assert done.returncode == 2 and "no experiment named 'nope'" in done.stderr and "Traceback" not in done.stderr
    cases = [(["--metric", "val_nothing"], "has a finite 'val_nothing'"),
             (["--sweep", "sweep_missing"], "no sweep with that parent run id or name"),
             (["--register", "x", "--alias", "v2"], "--alias 'v2': allowed are letters, digits")]
    for args, message in cases:  # the same main(), in this process
        assert report.main(args) == 2
        assert message in capsys.readouterr().err
    assert report.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["val_sharpe_ratio"] == 1.0


@pytest.mark.slow
def test_optuna_preset_runs_and_reports_a_winner(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    done = run_cli(["runner", "-m", "+strategy=momentum", "+hparams_search=momentum_optuna", *FAST,
                    "hydra.sweeper.n_trials=3", "verbose=true"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    best = json.loads((_sweep_dir(tmp_path) / "best_run.json").read_text())
    _, children = _children(tracking_uri, best["parent_run_id"])
    assert len(children) == 3 and best["winner"]["run_id"] in {r.info.run_id for r in children}
    assert "Best value" in done.stdout + done.stderr  # the sweeper's own summary: Hydra's log, with verbose=true
    assert "[HYDRA]" in done.stdout and "[HYDRA]" not in run_cli(  # and only then
        ["runner", "-m", "+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=600",
         "strategy.lookback=5,20", "hydra/launcher=joblib"], cli_env, tmp_path).stdout


@pytest.mark.slow
def test_a_job_config_that_cannot_be_composed_ends_the_parent_failed(tmp_path: Path, cli_env: dict,
                                                                     tracking_uri: str) -> None:
    # The second job's value cannot be merged into the typed schema: Hydra fails composing that job, after
    # the parent run exists (a wrong option name is refused before the sweep starts: test_runner).
    done = run_cli(["runner", "-m", "+strategy=momentum", *FAST[1:], "model=none", "backtest.commission=0.001,abc"],
                   cli_env, tmp_path)
    assert done.returncode == 2 and "backtest.commission=abc" in done.stderr
    assert "Traceback" not in done.stderr
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep_parent"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert "backtest.commission=abc" in parents[0].data.tags["error"]
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
@pytest.mark.parametrize("drift,believed", [(0.0, False), (0.002, True)], ids=["random_walk", "planted_edge"])
def test_the_winner_says_whether_it_can_be_believed(drift, believed, tmp_path: Path, cli_env: dict,
                                                    tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", "+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=1500",
                    f"data.drift={drift}", "seed=3", "strategy.lookback=2,5,10,20,40,60", "sweep_name=belief"],
                   cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = json.loads((_sweep_dir(tmp_path) / "best_run.json").read_text())["trials"]
    assert trials["n_trials"] == 6 and trials["segment"] == "val" and trials["trials_sharpe_variance"] > 0
    dsr, pbo = trials["deflated_sharpe_ratio"], trials["pbo"]
    assert (dsr > 0.95 and pbo < 0.2) if believed else (dsr < 0.5 and pbo > 0.3)
    assert trials["sentence"] in done.stdout and trials["sentence"].startswith(f"deflated Sharpe {dsr:.2f}")
    assert trials["winner_test_rank"] in range(1, 7) and set(trials["median_test_metrics"]) >= {"sharpe_ratio"}
    client = MlflowClient(tracking_uri)
    parent = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id],
                                "tags.`runner.role` = 'sweep_parent'")[0]
    assert parent.data.metrics["n_trials"] == 6 and parent.data.metrics["pbo"] == pytest.approx(pbo)
    assert parent.data.metrics["winner_deflated_sharpe_ratio"] == pytest.approx(dsr)
    report = run_cli(["runner.report", "--sweep", "belief", "--json"], cli_env, tmp_path)
    shown = json.loads(report.stdout)
    assert shown["n_trials"] == 6 and shown["runs"][0]["deflated_sharpe_ratio"] == pytest.approx(dsr, abs=1e-9)


def test_a_store_other_machines_cannot_reach_is_named_with_the_setting_to_use() -> None:
    from omegaconf import OmegaConf

    from runner.sweeps.cluster import check_shared_store

    def launcher(address):
        return OmegaConf.create({"_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
                                 "ray": {"init": {"address": address}, "remote": {}}})

    with pytest.raises(ValueError, match=r"address=10.0.0.5:6379 runs jobs on the cluster's machines, but the "
                                         r"tracking store sqlite:////x/mlflow.db is a local sqlite file"):
        check_shared_store(launcher("10.0.0.5:6379"), "sqlite:////x/mlflow.db", "/x/mlartifacts/1")
    with pytest.raises(ValueError, match=r"the server at http://s:5000 stores artifacts in a folder of its own "
                                         r"machine \(file:///srv/a/1\).*tracking=server"):
        check_shared_store(launcher("auto"), "http://s:5000", "file:///srv/a/1")
    check_shared_store(launcher("auto"), "http://s:5000", "mlflow-artifacts:/1")  # served by the server: fine
    check_shared_store(launcher(None), "sqlite:////x/mlflow.db", "/x/mlartifacts/1")  # a cluster of this machine


@pytest.mark.slow
def test_a_submitit_local_sweep_tracks_like_the_basic_launcher(tmp_path: Path, cli_env: dict,
                                                               tracking_uri: str) -> None:
    """hydra/launcher=submitit_local (what submitit_slurm runs on a SLURM cluster, here in local processes)."""
    done = run_cli(["runner", "-m", "+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=600",
                    "strategy.lookback=5,10", "hydra/launcher=submitit_local"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    best = json.loads((_sweep_dir(tmp_path) / "best_run.json").read_text())
    client, children = _children(tracking_uri, best["parent_run_id"])
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
    parent = client.get_run(best["parent_run_id"])
    assert all(r.data.tags["runner.pid"] != parent.data.tags["runner.pid"] for r in children)  # own processes
    assert best["winner"]["run_id"] == max(children, key=lambda r: r.data.metrics["val_sharpe_ratio"]).info.run_id


def _parents(tracking_uri: str, name: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("trading_experiment")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id],
                              f"tags.`runner.role` = 'sweep_parent' and tags.sweep_name = '{name}'")


@pytest.mark.slow
def test_a_second_launch_of_a_running_sweep_name_stops_before_creating_anything(tmp_path: Path, cli_env: dict,
                                                                                  tracking_uri: str) -> None:
    import subprocess
    import sys

    lookbacks = ",".join(str(k) for k in range(2, 42))  # 40 rule jobs: the first launch runs for a while
    first = subprocess.Popen([sys.executable, "-m", "runner", "-m", "+strategy=momentum", *SYNTHETIC,
                              f"strategy.lookback={lookbacks}", "sweep_name=same"], env=cli_env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_running(tracking_uri, first, tag=("sweep_name", "same"))  # not an MlflowClient: see its docstring
    [parent] = _parents(tracking_uri, "same")
    second = run_cli(["runner", "-m", "+strategy=momentum", *SYNTHETIC, "strategy.lookback=3,4",
                      "sweep_name=same"], cli_env, tmp_path)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2, second.stderr[-2000:]
    [line] = second.stderr.strip().splitlines()
    assert line.startswith(f"error: sweep_name='same' is running already: parent run {parent.info.run_id} (pid ")
    assert "sweep_name=NEW_NAME" in line and "resume" in line
    assert [p.info.run_id for p in _parents(tracking_uri, "same")] == [parent.info.run_id]  # nothing created
    assert len(sorted(tmp_path.glob("outputs/multirun/*/*"))) == 1  # nor a folder


def test_a_stale_parent_of_the_same_name_does_not_block_a_launch(tmp_path: Path, cli_env: dict,
                                                                 tracking_uri: str) -> None:
    import socket
    import subprocess
    import sys

    from runner.tracking.logger import MLflowLogger

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    logger = MLflowLogger("trading_experiment", tracking_uri)
    dead = logger.client.create_run(logger.experiment_id, run_name="stale", tags={  # its process has ended
        "runner.role": "sweep_parent", "sweep_name": "stale", "runner.host": socket.gethostname(),
        "runner.pid": gone.stdout.strip()})
    done = run_cli(["runner", "-m", "+strategy=momentum", *SYNTHETIC,
                    "strategy.lookback=5,10", "sweep_name=stale"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(_parents(tracking_uri, "stale")) == 2 and dead.info.status == "RUNNING"


@pytest.mark.slow
def test_two_launches_of_one_sweep_name_at_once_create_one_parent(tmp_path: Path, cli_env: dict,
                                                                   tracking_uri: str) -> None:
    import subprocess
    import sys

    lookbacks = ",".join(str(k) for k in range(2, 42))
    command = [sys.executable, "-m", "runner", "-m", "+strategy=momentum", *SYNTHETIC, f"strategy.lookback={lookbacks}",
               "sweep_name=twice"]
    launches = [subprocess.Popen(command, env=cli_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outputs = [launch.communicate(timeout=600) for launch in launches]
    codes = sorted(launch.returncode for launch in launches)
    assert codes == [0, 2], [err[-1500:] for _, err in outputs]
    refused = next(err for (_, err), launch in zip(outputs, launches, strict=True) if launch.returncode == 2)
    assert refused.strip().startswith("error: sweep_name='twice' is running already: parent run ")
    assert len(_parents(tracking_uri, "twice")) == 1
