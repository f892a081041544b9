"""The runner: real Hydra composition of every option, and the real CLI in subprocesses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import OmegaConf

from runner.config.build import model_factory
from runner.config.schema import register
from runner.evaluation.experiment import build_strategy, prepare
from tests.conftest import ROOT, run_cli

CONF = str(ROOT / "conf")
GROUP_OPTIONS = {group: sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
                 for group in ("data", "model", "trainer", "strategy", "backtest", "evaluation", "tracking")}
register()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_defaults_follow_the_contract() -> None:
    cfg = _compose([])
    assert cfg.data.series == "sp500" and cfg.data._target_ == "runner.data.sources.BundledSeries"
    assert cfg.model._target_.endswith("MLPForecaster") and list(cfg.data.splits) == [0.6, 0.2, 0.2]
    assert cfg.backtest.commission == 0.0005 and cfg.tracking.uri is None and cfg.trainer.epochs == 30
    assert dict(cfg.strategy) == {"long_only": True, "forecast_threshold": 0.0}  # the shared rules, no strategy
    assert cfg.experiment_name == "trading_experiment" and cfg.selection.metric == "val_sharpe_ratio"


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts])
def test_every_option_of_every_group_composes_and_builds(group: str, option: str) -> None:
    overrides = [f"{group}={option}" if group != "strategy" else f"+strategy={option}"]
    if group != "strategy":
        overrides.append("+strategy=momentum")
    if option in ("csv", "universe"):
        overrides.append("data.path=/nonexistent.csv")
    cfg = _compose(overrides)
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert build_strategy(resolved["strategy"]).warmup >= 0
    if group == "model" and resolved["model"]["_target_"]:
        model = model_factory(resolved["model"])(n_features=5)
        assert model(model.example_input(3)).shape == (3,) and resolved["trainer"]["epochs"] >= 1
    if group == "data" and option not in ("csv", "universe"):
        assert prepare(resolved).train_end > 0
    if group == "evaluation":
        assert resolved["evaluation"]["_target_"].rsplit(".", 1)[-1].lower() == option.replace("_", "") + "evaluation"
        prepared = prepare(resolved)
        assert (prepared.folds is not None) == (option == "walk_forward")
        assert (prepared.cpcv is not None) == (option == "cpcv")
        assert resolved["selection"]["metric"] == {"walk_forward": "oos_sharpe_ratio",
                                                   "cpcv": "cpcv_sharpe_ratio_mean"}.get(option, "val_sharpe_ratio")


def test_a_rule_without_use_for_a_model_runs_without_one_and_refuses_one() -> None:
    resolved = OmegaConf.to_container(_compose(["+strategy=buy_and_hold", "data=synthetic"]), resolve=True)
    assert resolved["model"]["_target_"] is None and prepare(resolved).model_factory is None
    resolved = OmegaConf.to_container(_compose(["+strategy=buy_and_hold", "model=mlp", "data=synthetic"]),
                                      resolve=True)
    with pytest.raises(ValueError, match="BuyAndHold has no use for a model.*use model=none"):
        prepare(resolved)


def test_model_features_follow_the_strategy_window() -> None:
    from strategies.momentum import Momentum

    bars = pd.DataFrame({"close": np.linspace(100, 120, 300)}, index=pd.bdate_range("2020-01-01", periods=300))
    short, long = Momentum(lookback=5).features(bars), Momentum(lookback=20).features(bars)
    assert list(short.columns) == ["ret_1", "ret_2", "ret_5", "vol_5"]
    assert list(long.columns) == ["ret_1", "ret_5", "ret_10", "ret_20", "vol_20"]
    assert short.iloc[:5].isna().any(axis=1).all() and short.iloc[6:].notna().all().all()  # trailing only


def test_models_set_their_own_training_defaults_and_the_command_line_wins() -> None:
    assert _compose(["model=lstm"]).trainer.epochs == 15 and _compose(["model=mlp"]).trainer.epochs == 30
    assert _compose(["model=lstm", "trainer.epochs=3"]).trainer.epochs == 3


def test_typos_and_wrong_types_fail_at_compose_time() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="backtest.comission"):
        _compose(["+strategy=momentum", "backtest.comission=0.1"])
    with pytest.raises(ConfigCompositionException, match="initial_capital"):
        _compose(["+strategy=momentum", "backtest.initial_capital=lots"])


def test_misspelled_strategy_parameter_gets_did_you_mean() -> None:
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(_compose(["+strategy=momentum", "+strategy.lookbak=5"]), resolve=True)
    with pytest.raises(TypeError, match="Did you mean strategy.lookback"):
        prepare(resolved)


def test_an_unknown_option_or_a_composition_error_is_a_user_error(tmp_path: Path, cli_env: dict) -> None:
    done = run_cli(["runner", "+strategy=momentum", "model=nope"], cli_env, tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: model=nope is not an option of model; allowed: linear, lstm, mlp, none."]
    done = run_cli(["runner", "+strategy=momentum", "model=none", "backtest.commission=abc"], cli_env, tmp_path)
    assert done.returncode == 2 and "could not be converted to Float" in done.stderr  # Hydra's own message
    assert "Traceback" not in done.stderr


def test_no_strategy_lists_the_available_ones(tmp_path: Path, cli_env: dict) -> None:
    done = run_cli(["runner"], cli_env, tmp_path)
    assert done.returncode != 0
    for name in GROUP_OPTIONS["strategy"]:
        assert name in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "outputs" / "mlflow.db").exists()


def test_bad_value_is_one_clear_message_and_no_run(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "+strategy=sma_crossover", "strategy.fast=50", "strategy.slow=10", "model=none"],
                   cli_env, tmp_path)
    assert done.returncode == 2
    assert "strategy.fast must be < strategy.slow" in done.stderr and "Traceback" not in done.stderr
    assert not Path(tracking_uri[len("sqlite:///"):]).exists()  # validated before any MLflow run


def _read_run(tracking_uri: str):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("trading_experiment")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def _table(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> pd.DataFrame:
    payload = json.loads(Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text())
    return pd.DataFrame(payload["data"], columns=payload["columns"])


@pytest.mark.slow
def test_cli_classic_rule_end_to_end(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "+strategy=momentum", "model=none", "strategy.lookback=10"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "val_sharpe_ratio" in done.stdout and "mlflow ui --backend-store-uri" in done.stdout
    client, run = _read_run(tracking_uri)
    links = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}"
    assert f"{links}?workflowType=machine_learning" in done.stdout and f"{links}/runs/{run.info.run_id}" in done.stdout
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    client, run = _read_run(tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy.lookback"] == "10" and run.data.params["data.splits"] == "[0.6, 0.2, 0.2]"
    assert run.data.params["backtest.periods_per_year"] == "auto"
    assert run.data.params["backtest.periods_per_year_used"] == "252"  # inferred from daily S&P 500 bars
    assert run.data.tags["strategy"] == "momentum" and run.data.tags["model"] == "none"
    assert run.info.run_name == "momentum-none-sp500"  # what it is, for the runs table (run_name=... names it)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"backtest", "figures", "config.yaml", ".hydra"} <= artifacts
    table = _table(client, run.info.run_id, "backtest/portfolio_values.json", tmp_path)
    assert list(table.columns) == ["timestamp", "segment", "close", "weight", "strategy_return", "equity",
                                   "benchmark_equity", "drawdown"]
    # Recompute val metrics from the logged table alone.
    val = table[table["segment"] == "val"]
    returns = val["strategy_return"].to_numpy(dtype=float)
    sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(252)
    assert run.data.metrics["val_sharpe_ratio"] == pytest.approx(sharpe, rel=1e-9)
    assert run.data.metrics["val_total_return"] == pytest.approx(val["equity"].iloc[-1] / 100_000 - 1, rel=1e-9)
    peak = np.maximum.accumulate(np.r_[100_000, val["equity"].to_numpy()])[1:]
    assert run.data.metrics["val_max_drawdown"] == pytest.approx((1 - val["equity"] / peak).max(), rel=1e-9)


@pytest.mark.slow
def test_cli_with_mlp_logs_curves_figures_and_a_reloadable_model(tmp_path: Path, cli_env: dict,
                                                                 tracking_uri: str) -> None:
    done = run_cli(["runner", "+strategy=momentum", "model=mlp", "trainer.epochs=3", "data.start=2008-01-01"],
                   cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "early-stopped on val: only test is out of sample" in done.stdout  # says which segment is untouched
    client, run = _read_run(tracking_uri)
    assert run.data.tags["train_device"] in ("cpu", "cuda") and run.data.metrics["best_epoch"] <= 2
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(len(history))) and 1 <= len(history) <= 3
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/equity.png", "figures/training.png"}
    from runner.tracking.model_io import load_torch_model

    model = load_torch_model(f"runs:/{run.info.run_id}/model")
    import torch

    stats = json.loads(Path(client.download_artifacts(run.info.run_id, "model_inputs/standardisation.json",
                                                      str(tmp_path))).read_text())
    assert stats["features"] == ["ret_1", "ret_5", "ret_10", "ret_20", "vol_20"] and len(stats["mean"]) == 5
    assert model(torch.zeros(7, 5)).shape == (7,)


@pytest.mark.slow
def test_a_position_held_from_the_first_bar_pays_its_entry_cost(tmp_path: Path, cli_env: dict,
                                                                tracking_uri: str) -> None:
    done = run_cli(["runner", "+strategy=buy_and_hold", "model=none", "data.start=2015-01-01",
                    "backtest.commission=0.001", "backtest.slippage=0.001"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    client, run = _read_run(tracking_uri)
    table = _table(client, run.info.run_id, "backtest/portfolio_values.json", tmp_path)
    train = table[table["segment"] == "train"]
    assert train["weight"].iloc[0] == 1.0 and train["equity"].iloc[0] == pytest.approx(100_000 * (1 - 0.002))
    close = train["close"].to_numpy()
    assert run.data.metrics["train_total_return"] == pytest.approx(0.998 * close[-1] / close[0] - 1, rel=1e-9)
    trades = _table(client, run.info.run_id, "backtest/trades.json", tmp_path)  # one open trade, bar 0 to the end
    everything = table["close"].to_numpy()
    assert trades["return"].iloc[0] == pytest.approx(0.998 * everything[-1] / everything[0] - 1, rel=1e-9)


@pytest.mark.slow
def test_timings_are_printed_only_with_verbose(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    """Not on a terminal: one training summary line without a time; verbose=true adds the timings."""
    command = ["runner", "+strategy=momentum", "model=linear", "trainer.epochs=2", "data.start=2016-01-01"]
    quiet = run_cli(command, cli_env, tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    trained = [line for line in quiet.stderr.splitlines() if line.startswith("trained ")]
    assert len(trained) == 1 and " s " not in trained[0] and "best epoch" in trained[0]
    assert "time:" not in quiet.stdout + quiet.stderr
    loud = run_cli([*command, "verbose=true"], cli_env, tmp_path)
    assert loud.returncode == 0, loud.stderr
    timing = [line for line in loud.stdout.splitlines() if line.startswith("time: ")]
    assert len(timing) == 1 and "of which training" in timing[0] and timing[0].endswith("on cpu")
    runs = MlflowClient(tracking_uri).search_runs(["1"], order_by=["start_time ASC"])
    assert len(runs) == 2 and runs[0].data.tags["config_hash"] == runs[1].data.tags["config_hash"]  # same experiment
