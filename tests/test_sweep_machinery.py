"""The runner's sweeper and launcher: configs composed once (in a helper) and parallel jobs, against Hydra's own."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from mlflow import MlflowClient
from omegaconf import OmegaConf

import runner.config  # noqa: F401  (schemas, as the CLI registers them)
from runner.composed import ComposedConfigs
from tests.conftest import ROOT, run_cli

FAST = ["model=none", "data.start=2010-01-01", "data.end=2014-12-31"]
TASK = ["+strategy=momentum", "model=none"]
HYDRA_BASIC = "hydra.sweeper._target_=hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@pytest.fixture()
def loader_and_master():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().hydra.config_loader
        master = loader.load_configuration("config", overrides=TASK, run_mode=RunMode.MULTIRUN)
        yield loader, master


def test_configs_from_the_helper_equal_hydras_own(loader_and_master) -> None:
    loader, master = loader_and_master
    batch = [[*TASK, f"strategy.lookback={n}"] for n in (5, 10, 15, 20, 5)]  # each job's overrides, a repeat too
    composed = ComposedConfigs(loader)
    composed.prepare(master, batch)
    assert composed._helper is not None  # this machine has 2 cores: the helper composes jobs 1..4
    try:
        for overrides in batch:
            mine = composed.load_sweep_config(master, overrides)
            assert OmegaConf.to_yaml(mine) == OmegaConf.to_yaml(loader.load_sweep_config(master, overrides))
    finally:
        composed.close()
    assert not any(composed._ready.values())  # each config handed out once


def test_a_job_that_cannot_be_composed_stops_the_sweep_with_hydras_error(loader_and_master) -> None:
    loader, master = loader_and_master
    composed = ComposedConfigs(loader)
    with pytest.raises(ConfigCompositionException, match="nope"):  # job 0 is composed at once
        composed.prepare(master, [[*TASK, "strategy.nope=1"], [*TASK, "strategy.lookback=5"]])
    jobs = [[*TASK, "model=none"], [*TASK, "model=none"], [*TASK, "model=nope"], [*TASK, "model=none"]]
    composed.prepare(master, jobs)
    try:
        with pytest.raises(ConfigCompositionException, match="nope"):  # by job 2 at the latest
            for overrides in jobs[:3]:
                composed.load_sweep_config(master, overrides)
    finally:
        composed.close()


def test_a_reused_equity_figure_draws_exactly_like_a_fresh_one() -> None:
    import numpy as np
    import pandas as pd

    from runner.backtest import run_backtest
    from runner.plots import EquityCanvas, equity_figure

    index = pd.bdate_range("2015-01-01", periods=800)
    close = 100 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.01, 800)))
    results = [run_backtest(close, np.sign(np.sin(np.arange(800) / period)), 480, 640, index=index)
               for period in (7.0, 19.0)]
    canvas = EquityCanvas()

    def png(figure) -> bytes:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=50)
        return buffer.getvalue()

    canvas.draw(results[0], "first")
    reused = png(canvas.draw(results[1], "second"))
    assert reused == png(equity_figure(results[1], "second"))
    assert reused != png(equity_figure(results[0], "second"))


@pytest.mark.slow
def test_sweep_jobs_get_the_configs_hydras_basic_sweeper_composes(tmp_path: Path, cli_env: dict) -> None:
    args = ["runner", "-m", "+strategy=momentum", *FAST, "strategy.lookback=5,20,60", "resume=false"]
    configs = {}
    for name, extra in (("mine", []), ("hydra", [HYDRA_BASIC])):
        launch = tmp_path / name
        launch.mkdir()
        done = run_cli([*args, *extra], cli_env, launch)
        assert done.returncode == 0, done.stderr
        jobs = sorted(launch.glob("outputs/multirun/*/*/[0-9]/.hydra"))
        assert len(jobs) == 3
        configs[name] = [((job / "config.yaml").read_text(), (job / "overrides.yaml").read_text()) for job in jobs]
    assert configs["mine"] == configs["hydra"]


@pytest.mark.slow
def test_a_later_job_that_cannot_be_composed_ends_the_parent_failed(tmp_path: Path, cli_env: dict,
                                                                    tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", "+strategy=momentum", "data.start=2010-01-01", "data.end=2014-12-31",
                    "model=none,nope"], cli_env, tmp_path)
    assert done.returncode != 0 and "Could not find 'model/nope'" in done.stderr
    assert "Traceback" not in done.stderr
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep_parent"]
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert "model/nope" in parents[0].data.tags["error"]
    assert all(r.info.status == "FINISHED" for r in runs if r not in parents)  # job 0 ran, nothing is RUNNING


@pytest.mark.slow
def test_joblib_jobs_run_in_this_process_and_a_worker(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", "+strategy=momentum", *FAST, "strategy.lookback=5,10,20,40,60,80",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    best = json.loads(next(tmp_path.glob("outputs/multirun/*/*/best_run.json")).read_text())
    client = MlflowClient(tracking_uri)
    children = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id],
                                  f"tags.mlflow.parentRunId = '{best['parent_run_id']}'")
    assert sorted(int(r.data.tags["job_number"]) for r in children) == list(range(6))
    assert {r.info.status for r in children} == {"FINISHED"}
    parent_pid = client.get_run(best["parent_run_id"]).data.tags["runner.pid"]
    pids = {r.data.tags["runner.pid"] for r in children}
    assert len(pids) == 2 and parent_pid in pids


def test_unsupported_joblib_options_are_refused_by_name(tmp_path: Path, cli_env: dict) -> None:
    done = run_cli(["runner", "-m", "+strategy=momentum", *FAST, "hydra/launcher=joblib",
                    "hydra.launcher.prefer=threads"], cli_env, tmp_path)
    assert done.returncode != 0 and "prefer=threads is not supported" in done.stderr
