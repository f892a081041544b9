"""The logger's best practices: engine versions, documented parameters, consistent param types and clean-up, on
real sqlite stores and through the real CLIs (the registry: ``test_registry.py``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from runner import clean, report
from runner.config.docs import BEGIN, END, README, consistent_types, descriptions, render_markdown
from runner.config.schema import register
from runner.engine import ENGINE_VERSION
from runner.logger import MLflowLogger
from runner.tracking.cleanup import folder_bytes
from runner.tracking.queries import OLDER_COUNTED, count_older, older_count
from runner.tracking.recorder import run_params
from tests.conftest import ROOT, run_cli

register()


def _run(logger: MLflowLogger, name: str, value: float, status: str = "FINISHED", payload: int = 50_000) -> str:
    logger.start_run(run_name=name)
    logger.log_metrics({"val_sharpe_ratio": value})
    logger.log_text("x" * payload, "backtest/portfolio_values.json")
    run_id = logger.run_id
    logger.end_run(status)
    return run_id


def _older_run(uri: str, experiment_id: str, value: float, version: str | None) -> str:
    """A run as logged before the tag existed (version None) or by an older engine."""
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=f"old_{version}", tags={"runner.engine_version": version}
                            if version else None)
    client.log_metric(run.info.run_id, "val_sharpe_ratio", value)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_older_engine_versions_are_left_out_and_counted(tmp_path: Path, tracking_uri: str, cli_env: dict,
                                                        capsys: pytest.CaptureFixture) -> None:
    logger = MLflowLogger("exp", tracking_uri)
    current = _run(logger, "current", 1.0)
    _run(logger, "current_worse", 0.5)
    untagged = _older_run(tracking_uri, logger.experiment_id, 3.0, None)
    _older_run(tracking_uri, logger.experiment_id, 2.0, "1")
    newer = _older_run(tracking_uri, logger.experiment_id, 4.0, str(ENGINE_VERSION + 1))  # a newer checkout's run
    assert MlflowClient(tracking_uri).get_run(current).data.tags["runner.engine_version"] == str(ENGINE_VERSION)

    best = logger.get_best_run("val_sharpe_ratio")
    assert best["run_id"] == current and best["older_runs_left_out"] == 2
    # counted up to a cap: each run counted is read whole (a store holding thousands took minutes to count)
    client = MlflowClient(tracking_uri)
    assert [count_older(client, [logger.experiment_id], "val_sharpe_ratio", cap=cap) for cap in (1, 2, 5)] == [1, 2, 2]
    assert (older_count(OLDER_COUNTED - 1), older_count(OLDER_COUNTED)) == (f"{OLDER_COUNTED - 1}", f"{OLDER_COUNTED}+")
    every = logger.get_best_run("val_sharpe_ratio", all_versions=True)
    assert every["run_id"] == newer and every["older_runs_left_out"] == 0

    done = run_cli(["runner.report", "--experiment", "exp"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "left out 2 finished run(s) of older engine versions" in done.stdout
    assert report.main(["--experiment", "exp", "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in ranked["runs"]][0] == current and ranked["older_runs_left_out"] == 2
    assert ranked["older_runs_counted_to"] == OLDER_COUNTED
    assert report.main(["--experiment", "exp", "--json", "--all-versions"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)["runs"]][:2] == [newer, untagged]


def test_the_readme_parameter_table_is_generated_and_in_sync() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "the README lost its generated parameter table markers"
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == render_markdown().strip(), ("README parameter table drifted: run python -m runner.config.docs "
                                                "--write")
    from runner.config.docs import METRICS_BEGIN, METRICS_END
    from runner.engine.metric_docs import render_markdown as render_metrics

    block = text.split(METRICS_BEGIN, 1)[1].split(METRICS_END, 1)[0].strip()
    assert block == render_metrics().strip(), "README metric table drifted: run python -m runner.config.docs --write"


def test_every_metric_a_run_logs_has_a_meaning_and_a_unit() -> None:
    """The golden runs' metrics (holdout, walk-forward, universe, model), a CPCV run's, and the run-level ones."""
    from runner.engine.metric_docs import RUN, SEGMENT, describe
    from runner.evaluation.experiment import compute, prepare
    from tests.golden_runs import GOLDEN
    from tests.test_universe_strategies import composed

    keys = {re.sub(r"^fold\d+_", "fold_test_", key)  # a fold's metrics are logged as fold_test_* with step = fold
            for path in GOLDEN.glob("*.json") for key in json.loads(path.read_text())}
    cpcv = compute(prepare(composed(["+strategy=momentum", "model=none", "data=synthetic", "data.n_bars=600",
                                     "evaluation=cpcv"]))).cpcv
    keys |= set(cpcv.distribution) | {f"path_{k}" for k in cpcv.path_metrics} | set(RUN)
    assert len(keys) > 100
    undocumented = sorted(k for k in keys if describe(k) is None)
    assert not undocumented, undocumented
    assert all(describe(k)["meaning"] for k in keys) and describe("test_turnover")["unit"] == "x equity/year"
    assert describe("fold_test_sharpe_ratio")["meaning"].endswith("each walk-forward fold's test stretch, step = fold")
    assert describe("test_nothing") is None and set(SEGMENT) >= {"alpha", "beta", "value_at_risk"}


def test_the_report_says_what_each_metric_means_in_100_columns(capsys: pytest.CaptureFixture) -> None:
    from runner.engine.metric_docs import RUN, SEGMENT

    assert report.main(["--metrics"]) == 0  # no store needed
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in [*SEGMENT, *RUN]) and "historical 95% value at risk" in out
    assert max(map(len, out.splitlines())) <= 100


@pytest.mark.parametrize("strategy", sorted(p.stem for p in (ROOT / "conf" / "strategy").glob("*.yaml")))
def test_every_logged_key_has_a_meaning(strategy: str) -> None:
    for model in sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(compose(config_name="config", overrides=[f"+strategy={strategy}",
                                                                                   f"model={model}"]), resolve=True)
        params = run_params(cfg)
        described = descriptions(cfg, list(params))
        missing = [k for k, d in described.items() if d["meaning"] == "(undocumented)"]
        assert not missing, f"{strategy}/{model}: document {missing} in runner.config.schema or the class's signature"


def test_help_shows_a_group_with_meanings_units_and_allowed_values(tmp_path: Path, cli_env: dict) -> None:
    done = run_cli(["runner", "--help", "model"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "model=mlp" in done.stdout and "model.hidden_sizes" in done.stdout
    assert "dropout after each hidden layer [probability]; allowed: [0, 1)" in done.stdout
    done = run_cli(["runner", "--help", "modle"], cli_env, tmp_path)
    assert done.returncode == 2 and "groups: top, data, model" in done.stderr


def test_ints_given_for_float_keys_are_logged_as_floats() -> None:
    config = {"strategy": {"_target_": "strategies.mean_reversion.MeanReversion", "window": 20, "entry_z": 1,
                           "exit_z": 0, "long_only": True, "forecast_threshold": 0},
              "backtest": {"commission": 0}, "model": {"_target_": "runner.ml.models.LinearForecaster"}}
    typed = consistent_types(config, run_params(config))
    assert typed["strategy.entry_z"] == 1.0 and isinstance(typed["strategy.entry_z"], float)
    assert isinstance(typed["strategy.exit_z"], float) and isinstance(typed["strategy.forecast_threshold"], float)
    assert typed["strategy.window"] == 20 and isinstance(typed["strategy.window"], int)
    assert typed["strategy.long_only"] is True and isinstance(typed["backtest.commission"], float)


def _model_run(logger: MLflowLogger, name: str, value: float, status: str = "FINISHED") -> str:
    logger.start_run(run_name=name)
    logger.log_metrics({"val_sharpe_ratio": value})
    model = torch.nn.Sequential(torch.nn.Linear(3, 1))
    logger.log_model(model, "model", input_example=torch.zeros(2, 3))
    logger.log_text("x" * 50_000, "backtest/portfolio_values.json")
    run_id = logger.run_id
    logger.end_run(status)
    return run_id


def test_clean_frees_failed_and_killed_runs_and_keeps_the_rest(tmp_path: Path, tracking_uri: str, cli_env: dict,
                                                               capsys: pytest.CaptureFixture) -> None:
    logger = MLflowLogger("exp", tracking_uri)
    finished = _run(logger, "finished", 1.0)
    failed, killed = _run(logger, "failed", 0.1, "FAILED"), _run(logger, "killed", 0.2, "KILLED")
    failed_model = _model_run(logger, "failed_with_model", 0.3, "FAILED")
    registered = _model_run(logger, "failed_but_registered", 0.4, "FAILED")
    client = MlflowClient(tracking_uri)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    model_id = client.search_logged_models([logger.experiment_id], f"source_run_id = '{registered}'")[0].model_id
    mlflow.register_model(f"models:/{model_id}", "kept")
    running = logger.start_run(run_name="running").info.run_id
    logger.log_metrics({"val_sharpe_ratio": 0.0})
    logger.log_text("still running", "notes.txt")
    root = tmp_path / "mlartifacts"
    orphan = root / ("f" * 32)
    (orphan / "artifacts").mkdir(parents=True)
    (orphan / "artifacts" / "big.bin").write_bytes(b"0" * 40_000)
    folder = {r: root / r for r in (finished, failed, killed, failed_model, registered, running)}
    dropped_model = root / "models" / client.search_logged_models(
        [logger.experiment_id], f"source_run_id = '{failed_model}'")[0].model_id
    assert all(f.is_dir() for f in folder.values()) and dropped_model.is_dir()
    before = folder_bytes(root)

    done = run_cli(["runner.clean", "--status", "FAILED,KILLED"], cli_env, tmp_path)  # the dry run
    assert done.returncode == 0, done.stderr
    assert "would delete 3 run(s) and 1 orphaned folder(s)" in done.stdout and "nothing changed" in done.stdout
    assert f"kept: run {registered}" in done.stdout and "backs registered kept v1" in done.stdout
    assert folder_bytes(root) == before and len(client.search_runs([logger.experiment_id])) == 6

    freed = sum(folder_bytes(folder[r]) for r in (failed, killed, failed_model)) + folder_bytes(dropped_model) \
        + folder_bytes(orphan)
    assert clean.main(["--status", "FAILED,KILLED", "--older-than", "0s", "--yes"]) == 0
    assert "deleted 3 run(s) and 1 orphaned folder(s)" in capsys.readouterr().out
    assert before - folder_bytes(root) == freed > 190_000
    assert not any(p.exists() for p in (folder[failed], folder[killed], folder[failed_model], dropped_model, orphan))
    assert all(folder[r].is_dir() for r in (finished, registered, running))
    from mlflow.entities import ViewType

    left = {r.info.run_id for r in client.search_runs([logger.experiment_id], run_view_type=ViewType.ALL)}
    assert left == {finished, registered, running}  # purged, not only soft-deleted

    assert clean.main(["--status", "FINISHED,FAILED,KILLED", "--yes"]) == 0  # RUNNING and registered stay
    assert {r.info.run_id for r in client.search_runs([logger.experiment_id])} == {registered, running}
    assert clean.main(["--status", "RUNNING"]) == 2 and "never cleaned" in capsys.readouterr().err
    logger.end_run()



def test_clean_keeps_every_run_that_a_staying_run_points_at(tmp_path: Path, tracking_uri: str, cli_env: dict,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """What a run that stays points at stays: a resumed job's earlier run (its pointer stays), that run's sweep parent
    (through it), another tool's parent run (its nested run stays). Found by searching what points at the
    candidates, and the same when the whole store is read instead (too many parents to search one by one)."""
    import time

    logger = MLflowLogger("exp", tracking_uri)
    client = logger.client
    old, new = 1_000_000_000_000, int(time.time() * 1000)  # 2001, and now

    def run(name: str, status: str, start: int, **tags: str) -> str:
        run_id = client.create_run(logger.experiment_id, start_time=start, tags=tags, run_name=name).info.run_id
        client.set_terminated(run_id, status, end_time=start + 1000)
        return run_id

    parent = run("parent", "FINISHED", old, **{"runner.role": "sweep_parent", "config_hash": "p"})
    resumed = run("resumed", "FINISHED", old, **{"mlflow.parentRunId": parent, "config_hash": "a"})
    failed = run("failed", "FAILED", old, **{"mlflow.parentRunId": parent, "config_hash": "b"})
    relaunch = run("relaunch", "FINISHED", new, **{"runner.role": "sweep_parent", "config_hash": "p"})
    run("pointer", "FINISHED", new, **{"mlflow.parentRunId": relaunch, "config_hash": "a", "resumed_from": resumed})
    foreign = run("foreign", "FAILED", old)  # another tool's run: no config hash
    run("nested", "FINISHED", new, **{"mlflow.parentRunId": foreign})
    lonely = run("lonely", "FAILED", old, config_hash="c")

    done = run_cli(["runner.clean", "--older-than", "1d", "--json"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert sorted(r["run_id"] for r in plan["runs"]) == sorted([failed, lonely])
    assert {k["run_id"]: k["why"] for k in plan["kept"]} == {
        resumed: "stands in for the resumed job pointer", parent: "the sweep parent of kept run resumed",
        foreign: "the sweep parent of kept run nested"}
    monkeypatch.setattr("runner.tracking.cleanup.CHILD_LOOKUPS", 0)  # read the whole store instead
    assert clean.main(["--older-than", "1d", "--json", "--tracking-uri", tracking_uri]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert (whole["runs"], whole["kept"]) == (plan["runs"], plan["kept"])
    done = run_cli(["runner.clean", "--status", "FAILED", "--json"], cli_env, tmp_path)
    assert sorted(r["run_id"] for r in json.loads(done.stdout)["runs"]) == sorted([failed, lonely])

@pytest.mark.slow
def test_a_sweep_logs_one_type_per_key_and_never_resumes_an_older_version(tmp_path: Path, cli_env: dict,
                                                                         tracking_uri: str) -> None:
    command = ["runner", "-m", "+strategy=mean_reversion", "model=none", "data=synthetic", "data.n_bars=400",
               "strategy.entry_z=1,2.5", "sweep_name=typed"]
    done = run_cli(command, cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking_uri)
    children = client.search_runs(client.get_experiment_by_name("trading_experiment").experiment_id,
                                  "tags.sweep_name = 'typed' and tags.job_number != ''")
    assert sorted(r.data.params["strategy.entry_z"] for r in children) == ["1.0", "2.5"]
    path = client.download_artifacts(children[0].info.run_id, "params/descriptions.json", str(tmp_path))
    meanings = json.loads(Path(path).read_text())
    assert meanings["strategy.entry_z"]["unit"] == "std devs" and meanings["strategy.entry_z"]["type"] == "float"
    assert meanings["backtest.periods_per_year_used"]["meaning"].startswith("the bars a year")

    for run in children:  # as if logged before an engine change: the rerun must not reuse them
        client.set_tag(run.info.run_id, "runner.engine_version", "1")
    again = run_cli(command, cli_env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped: this config already has FINISHED run" not in again.stdout
    rerun = client.search_runs(children[0].info.experiment_id, "tags.sweep_name = 'typed' and "
                               f"tags.`runner.engine_version` = '{ENGINE_VERSION}' and tags.job_number != ''")
    assert len(rerun) == 2 and all("resumed_from" not in r.data.tags for r in rerun)


def test_a_run_logs_only_the_keys_that_apply_to_it() -> None:
    """Without a model, no training settings and no forecast threshold among the params (config.yaml keeps them)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        from omegaconf import OmegaConf

        rule, model = (OmegaConf.to_container(compose(config_name="config", overrides=["+strategy=momentum",
                                                                                       f"model={m}"]), resolve=True)
                       for m in ("none", "linear"))
    ruled, trained = run_params(rule), run_params(model)
    assert not [k for k in ruled if k.startswith("trainer.")] and "strategy.forecast_threshold" not in ruled
    assert "strategy.long_only" in ruled and "strategy.lookback" in ruled and ruled["model._target_"] is None
    assert {"trainer.epochs", "trainer.lr", "strategy.forecast_threshold"} <= set(trained)
    assert set(ruled) == {k for k in trained if not k.startswith(("trainer.", "model.")) and
                          k != "strategy.forecast_threshold"} | {"model._target_"}
