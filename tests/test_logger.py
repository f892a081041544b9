"""MLflowLogger against a real sqlite store: every effect is read back with MlflowClient."""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from runner.logger import MLflowLogger, NoActiveRunError
from runner.tracking.model_io import load_torch_model
from runner.tracking.queries import ENGINE_VERSION_TAG
from runner.tracking.sanitize import REDACTED, config_to_container, flatten, table_json, to_jsonable
from runner.tracking.writer import RunWriter


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))


def test_seed_usage_end_to_end(tracking_uri: str, tmp_path) -> None:
    """The original sketch's usage: start a run, log params/metrics/model/backtest, find the best run."""
    logger = MLflowLogger("trading_experiment", tracking_uri)
    params = {"strategy": {"name": "momentum", "lookback": 20}, "windows": [5, 20], "lr": np.float32(0.01)}
    snapshot = copy.deepcopy(params)
    model = tiny_model()
    portfolio = pd.DataFrame({"timestamp": pd.date_range("2020-01-01", periods=3), "segment": "val",
                              "close": [1.0, 2.0, 3.0], "weight": [0.0, 1.0, 1.0],
                              "strategy_return": [np.nan, 0.0, 0.5], "equity": [1.0, 1.0, 1.5],
                              "benchmark_equity": [1.0, 2.0, 3.0], "drawdown": [0.0, 0.0, 0.0]})
    trades = pd.DataFrame({"entry_time": [pd.Timestamp("2020-01-02")], "return": [0.5]})
    with logger.start_run(run_name="seed_run") and logger:
        run_id = logger.run_id
        logger.log_params(params)
        logger.log_metrics({"train_loss": 0.5}, step=1)
        uri = logger.log_model(model, "model")
        logger.log_backtest_results({"metrics": {"val_sharpe_ratio": 1.5, "val_total_return": 0.2},
                                     "trades": trades, "portfolio_values": portfolio})
    assert params == snapshot  # input not mutated
    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "seed_run"
    assert run.data.params["strategy"] == '{"lookback": 20, "name": "momentum"}'
    assert run.data.params["windows"] == "[5, 20]" and run.data.params["lr"] == "0.009999999776482582"
    assert run.data.metrics["val_sharpe_ratio"] == 1.5
    files = {a.path for a in client.list_artifacts(run_id, "backtest")}
    assert files == {"backtest/trades.json", "backtest/portfolio_values.json", "backtest/results.json",
                     "backtest/trades.parquet", "backtest/portfolio_values.parquet"}
    table = json.loads(open(client.download_artifacts(run_id, "backtest/portfolio_values.json", str(tmp_path))).read())
    assert table["columns"] == list(portfolio.columns)
    assert table["data"][0][0] == "2020-01-01T00:00:00" and table["data"][0][4] is None
    reloaded = load_torch_model(uri)
    x = torch.randn(7, 3)
    torch.testing.assert_close(reloaded(x), model(x))
    best = logger.get_best_run("val_sharpe_ratio")
    assert best == {"run_id": run_id, "metrics": run.data.metrics, "params": run.data.params, "older_runs_left_out": 0,
                    "data_digest": None, "mixed_data": False}  # a run logged without its bars' digest


def _run(logger: MLflowLogger, metrics: dict, status: str = "FINISHED") -> str:
    logger.start_run()
    run_id = logger.run_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.log_metrics(metrics)
    logger.end_run(status)
    return run_id


def test_get_best_run_max_min_nan_inf_failed_and_empty(tracking_uri: str) -> None:
    logger = MLflowLogger("best", tracking_uri)
    assert logger.get_best_run("val_sharpe_ratio") is None  # empty experiment
    low = _run(logger, {"val_sharpe_ratio": -1.0})
    mid = _run(logger, {"val_sharpe_ratio": 0.5})
    _run(logger, {"val_sharpe_ratio": float("nan")})
    _run(logger, {"val_sharpe_ratio": float("inf")})  # logged as NaN: never wins
    _run(logger, {"val_sharpe_ratio": 9.0}, status="FAILED")
    _run(logger, {"other": 1.0})
    assert logger.get_best_run("val_sharpe_ratio")["run_id"] == mid
    assert logger.get_best_run("val_sharpe_ratio", mode="min")["run_id"] == low
    tie = _run(logger, {"val_sharpe_ratio": 0.5})
    assert logger.get_best_run("val_sharpe_ratio")["run_id"] == tie  # ties: most recently started
    assert logger.get_best_run("val_sharpe_ratio", filter_string=f"attributes.run_id = '{low}'")["run_id"] == low
    with pytest.raises(ValueError, match="mode 'best' is not valid"):
        logger.get_best_run("val_sharpe_ratio", mode="best")
    with pytest.raises(ValueError, match="not a valid MLflow metric key"):
        logger.get_best_run("val sharpe %")


def ranked_both_ways(logger: MLflowLogger) -> None:
    """Both routes of ``search_ranked`` (narrowing, MLflow's own ordering) name the same runs in the same order."""
    from runner.tracking.queries import search_ranked

    client, experiments = logger.client, [logger.experiment_id]
    for mode in ("max", "min"):
        for top in (1, 3, 50):
            for scope in (None, "params.group = 'a'"):
                routes = [[r.info.run_id for r in search_ranked(client, experiments, "val_sharpe_ratio", mode, scope,
                                                                top, in_store=in_store)] for in_store in (False, True)]
                assert routes[0] == routes[1], (mode, top, scope)
                assert routes[0]  # something was ranked


def test_both_ranking_routes_name_the_same_runs(tracking_uri: str) -> None:
    """Ties (broken by the latest start, then the run id), NaN, stored infinities, failed runs and a filter, by either
    route; the store's route is what a PostgreSQL-backed store uses (``RUNNER_SERVER_DATABASE``)."""
    logger = MLflowLogger("routes", tracking_uri)
    values = [0.5, -1.0, 0.5, float("nan"), 2.0, 0.5, 1e-7, -3.0, 2.0, 0.25]
    for i, value in enumerate(values):
        logger.start_run()
        logger.log_params({"group": "a" if i % 2 else "b"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logger.log_metrics({"val_sharpe_ratio": value})
        logger.end_run("FAILED" if i == 4 else "FINISHED")  # the first 2.0 failed: it never ranks
    client = MlflowClient(tracking_uri)
    for infinity in (float("inf"), float("-inf")):  # stored as +/-1.797e308: neither ranks, by either route
        stored = client.create_run(logger.experiment_id)
        client.log_metric(stored.info.run_id, "val_sharpe_ratio", infinity)
        client.set_terminated(stored.info.run_id)
    ranked_both_ways(logger)


def test_the_store_database_decides_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    from runner.errors import ConfigError
    from runner.tracking.queries import SERVER_DATABASE_ENV, store_database

    monkeypatch.delenv(SERVER_DATABASE_ENV, raising=False)
    assert store_database("sqlite:////tmp/mlflow.db") == "sqlite"
    assert store_database("postgresql+psycopg://u@h/db") == "postgresql"
    assert store_database("http://127.0.0.1:5000") is None  # a server's database is not visible to a client
    monkeypatch.setenv(SERVER_DATABASE_ENV, "PostgreSQL")
    assert store_database("https://tracking.example") == "postgresql"
    assert store_database("sqlite:////tmp/mlflow.db") == "sqlite"  # the URI says it: the variable is for servers
    monkeypatch.setenv(SERVER_DATABASE_ENV, "oracle")
    with pytest.raises(ConfigError, match="RUNNER_SERVER_DATABASE='oracle' is not valid: .* sqlite, postgresql"):
        store_database("http://127.0.0.1:5000")


def test_stored_inf_from_another_client_never_wins(tracking_uri: str) -> None:
    logger = MLflowLogger("inf", tracking_uri)
    good = _run(logger, {"val_sharpe_ratio": 2.0})
    client = MlflowClient(tracking_uri)
    run = client.create_run(logger.experiment_id)
    client.log_metric(run.info.run_id, "val_sharpe_ratio", float("inf"))  # stored as 1.797e308
    client.set_terminated(run.info.run_id)
    assert logger.get_best_run("val_sharpe_ratio")["run_id"] == good


def test_small_metric_values_survive_the_filter_grammar(tracking_uri: str) -> None:
    """Bounds like 1e-05 must be written without exponents for MLflow's filter parser."""
    logger = MLflowLogger("tiny", tracking_uri)
    ids = [_run(logger, {"m": v}) for v in (1e-05, 3e-07, -2e-9)]
    assert logger.get_best_run("m")["run_id"] == ids[0]
    assert logger.get_best_run("m", mode="min")["run_id"] == ids[2]


def test_long_params_secrets_and_key_validation(tracking_uri: str, tmp_path) -> None:
    logger = MLflowLogger("params", tracking_uri)
    long_value = list(range(3000))
    with logger:
        logged = logger.log_params({"universe": long_value, "db.password": "hunter2", "api_key": "k",
                                    "uri": "postgresql://bob:s3cret@host/db", "env": "${oc.env:TOKEN}"})
        run_id = logger.run_id
        with pytest.raises(ValueError, match="param key 'bad%key' is not valid"):
            logger.log_params({"bad%key": 1})
    params = MlflowClient(tracking_uri).get_run(run_id).data.params
    assert params["db.password"] == REDACTED and params["api_key"] == REDACTED and params["env"] == REDACTED
    assert "s3cret" not in params["uri"] and params["uri"].endswith("@host/db")
    assert "params/long_params.json" in params["universe"] and logged["universe"] == params["universe"]
    path = MlflowClient(tracking_uri).download_artifacts(run_id, "params/long_params.json", str(tmp_path))
    assert json.loads(open(path).read())["universe"] == long_value  # kept whole


def test_no_active_run_and_context_manager_statuses(tracking_uri: str) -> None:
    logger = MLflowLogger("status", tracking_uri)
    with pytest.raises(NoActiveRunError, match="no active run"):
        logger.log_metrics({"a": 1.0})
    with pytest.raises(RuntimeError, match="boom"):
        with logger:
            failed = logger.run_id
            raise RuntimeError("boom")
    with pytest.raises(KeyboardInterrupt):
        with logger:
            killed = logger.run_id
            raise KeyboardInterrupt
    client = MlflowClient(tracking_uri)
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(killed).info.status == "KILLED"
    assert logger.run_id is None


def test_default_store_is_under_the_launch_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    logger = MLflowLogger("default")
    assert logger.tracking_uri == f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    experiment = logger.client.get_experiment(logger.experiment_id)
    assert experiment.artifact_location == (tmp_path / "outputs" / "mlartifacts").as_uri()


def test_json_of_numpy_and_pandas_round_trips(tracking_uri: str, tmp_path) -> None:
    value = {"a": np.arange(3), "b": np.float64(1.5), "c": pd.Timestamp("2020-01-02"), "d": float("nan"),
             "e": pd.Series([1, 2], index=["x", "y"]), "f": np.int64(7), "g": [np.bool_(True)]}
    expected = {"a": [0, 1, 2], "b": 1.5, "c": "2020-01-02T00:00:00", "d": None, "e": {"x": 1, "y": 2},
                "f": 7, "g": [True]}
    assert to_jsonable(value) == expected
    table = json.loads(table_json(pd.DataFrame({"t": pd.to_datetime(["2020-01-01", None, "2020-01-02 09:30:00.5"],
                                                            format="mixed"),
                                        "x": [1.5, np.inf, np.nan], "n": [1, 2, 3], "s": ["a", "b", None]})))
    assert table == {"columns": ["t", "x", "n", "s"],
                     "data": [["2020-01-01T00:00:00.000", 1.5, 1, "a"], [None, None, 2, "b"],
                              ["2020-01-02T09:30:00.500", None, 3, None]]}
    logger = MLflowLogger("json", tracking_uri)
    with logger:
        logger.log_dict(value, "extra/value.json")
        run_id = logger.run_id
    path = MlflowClient(tracking_uri).download_artifacts(run_id, "extra/value.json", str(tmp_path))
    assert json.loads(open(path).read()) == expected
    with pytest.raises(ValueError, match="must stay inside"):
        with logger:
            logger.log_dict({}, "../escape.json")


def test_config_params_are_resolved_and_redacted(monkeypatch) -> None:
    from omegaconf import OmegaConf

    monkeypatch.setenv("MY_TOKEN", "topsecret")
    cfg = OmegaConf.create({"model": {"lr": 0.1, "sizes": [8, 4]}, "tracking": {"uri": "${oc.env:MY_TOKEN}"},
                            "ref": "${model.lr}", "hydra": {"run": {"dir": "x"}}})
    flat = flatten(config_to_container(cfg))
    assert flat == {"model.lr": 0.1, "model.sizes": [8, 4], "tracking.uri": REDACTED, "ref": 0.1}
    assert "topsecret" not in json.dumps(flat) and not math.isnan(flat["model.lr"])


@pytest.mark.parametrize("writer", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("ending", ["FINISHED", "FAILED"])
def test_deferred_writes_reach_the_store_whole_at_the_runs_end(ending: str, writer: bool, tracking_uri: str,
                                                               tmp_path) -> None:
    """``defer_writes``: nothing but the run itself before its end; then every param, tag (the last value of a
    key), metric (history too, over MLflow's 1,000-per-batch limit) and file, whatever the ending; written by
    this process or by a ``RunWriter``'s (the run then is not MLflow's active run, and has the same tags)."""
    logger = MLflowLogger("trading_experiment", tracking_uri)
    logger.defer_writes = True
    logger.writer = RunWriter(tracking_uri) if writer else None
    client = MlflowClient(tracking_uri)
    logger.start_run(run_name="deferred", tags={"given": "at start"})
    assert (mlflow.active_run() is None) == writer
    run_id = logger.run_id
    logger.log_params({f"p{i}": i for i in range(150)})  # two of MLflow's 100-param batches
    logger.set_tags({"note": "first"})
    logger.set_tags({"note": "second"})
    logger.log_metric_history({"loss": [float(i) for i in range(1200)]})
    logger.log_metrics({"val_sharpe_ratio": 1.5})
    logger.log_dict({"a": 1}, "extra/a.json")
    early = client.get_run(run_id)
    assert not early.data.params and not early.data.metrics and early.data.tags["given"] == "at start"
    assert not client.list_artifacts(run_id)
    logger.end_run(ending)
    if logger.writer is not None:
        logger.writer.close()
    assert mlflow.active_run() is None
    run = client.get_run(run_id)
    assert run.info.status == ending and len(run.data.params) == 150 and run.data.params["p149"] == "149"
    assert {"mlflow.user", "mlflow.source.name", "mlflow.runName", ENGINE_VERSION_TAG} <= run.data.tags.keys()
    assert run.data.tags["note"] == "second" and run.data.metrics["val_sharpe_ratio"] == 1.5
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [float(i) for i in range(1200)]
    assert [a.path for a in client.list_artifacts(run_id, "extra")] == ["extra/a.json"]


@pytest.mark.parametrize("writer", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_deferred_run_whose_writes_fail_ends_failed_with_the_error_raised(writer: bool, tracking_uri: str,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A deferred run's writes failed at its end (here its artifact folder is a file): it ends FAILED, never
    FINISHED without what it computed (a resume would stand on it), and the error is raised: by ``end_run``, or,
    written by a ``RunWriter``, when the writer is closed, with the writer's traceback (and on the run's ``error``
    tag), or, closed while a stop is on its way out, as one line; the next runs are written."""
    logger = MLflowLogger("trading_experiment", tracking_uri)
    logger.defer_writes = True
    logger.writer = RunWriter(tracking_uri) if writer else None
    client = MlflowClient(tracking_uri)
    logger.start_run(run_name="lost files")
    broken = logger.run_id
    logger.log_dict({"a": 1}, "extra/a.json")
    logger.log_metrics({"x": 1.0})
    where = Path(urlparse(client.get_run(broken).info.artifact_uri).path)  # a broken artifact store: a file
    where.parent.mkdir(parents=True, exist_ok=True)  # where the run's artifact folder goes
    where.write_text("not a folder")
    if writer:
        logger.end_run("FINISHED")
    else:
        with pytest.raises(OSError):
            logger.end_run("FINISHED")
    logger.start_run(run_name="next")
    after = logger.run_id
    logger.log_metrics({"x": 1.0})
    logger.end_run("FINISHED")
    if writer:
        with pytest.raises(OSError) as raised:
            logger.writer.close()
        assert "Traceback" in str(raised.value.__cause__) and "write_deferred" in str(raised.value.__cause__)
        assert client.get_run(broken).data.tags["error"].startswith("its writes failed: ")  # said on the run too
        logger.writer = RunWriter(tracking_uri)  # closed as a stop leaves: not raised, one line
        logger.start_run(run_name="lost again")
        again = Path(urlparse(client.get_run(logger.run_id).info.artifact_uri).path)
        again.parent.mkdir(parents=True, exist_ok=True)
        again.write_text("not a folder")
        logger.log_dict({"a": 1}, "extra/a.json")
        logger.end_run("KILLED")
        logger.writer.close(raise_failure=False)
        assert "warning: a run's writes failed, so it ended FAILED" in capsys.readouterr().err
    assert client.get_run(broken).info.status == "FAILED" and where.read_text() == "not a folder"
    assert client.get_run(after).data.metrics == {"x": 1.0} and client.get_run(after).info.status == "FINISHED"


@pytest.mark.parametrize("deferred", [False, True])
def test_a_tag_is_sent_again_wherever_the_run_could_lack_it(deferred: bool, tracking_uri: str) -> None:
    """A tag the run was started with is not sent again with the same value, but every change is, a change back
    to the start's value too, and the next run of the same logger gets every tag it is given, whatever the last
    run held."""
    logger = MLflowLogger("trading_experiment", tracking_uri)
    logger.defer_writes = deferred
    client = MlflowClient(tracking_uri)
    logger.start_run(run_name="first", tags={"data_digest": "aaa", "kind": "x"})
    first = logger.run_id
    logger.set_tags({"data_digest": "aaa", "kind": "y"})
    logger.set_tags({"kind": "x"})
    logger.end_run()
    logger.start_run(run_name="second")
    second = logger.run_id
    logger.set_tags({"data_digest": "aaa", "kind": "x"})
    logger.end_run()
    assert {k: client.get_run(first).data.tags[k] for k in ("data_digest", "kind")} == {"data_digest": "aaa",
                                                                                        "kind": "x"}
    assert {k: client.get_run(second).data.tags.get(k) for k in ("data_digest", "kind")} == {"data_digest": "aaa",
                                                                                             "kind": "x"}
