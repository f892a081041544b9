"""From a winner to a signal, through the real CLIs on a real sqlite store: a model sweep on a CSV declares its bars
(the same digests across its runs, others for other data), ``--gate`` refuses a weak winner and registers nothing,
``--register NAME --alias champion`` registers the whole strategy, ``mlflow models serve`` answers raw bars with the
backtest's weights with pickle deserialisation off, and ``runner.signal`` prints what to hold after the last bar."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from runner.data.sources import SyntheticSeries
from tests.conftest import free_port, run_cli

pytestmark = pytest.mark.slow


def write_bars(path: Path, seed: int, n_bars: int = 800) -> pd.DataFrame:
    bars = SyntheticSeries(seed=seed, n_bars=n_bars, drift=0.0, volatility=0.01, regimes=1).load()
    bars.rename_axis("date").to_csv(path)
    return pd.read_csv(path)


def report(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli(["runner.report", "--experiment", "lineage", *args], env, cwd)


def logged_weights(client: MlflowClient, run_id: str, folder: Path) -> np.ndarray:
    table = client.download_artifacts(run_id, "backtest/portfolio_values.parquet", str(folder))
    return pd.read_parquet(table)["weight"].to_numpy()


def serve(model_uri: str, env: dict, cwd: Path, bars: pd.DataFrame) -> pd.DataFrame:
    """``mlflow models serve`` on the model, pickle off; the answer to one POST of ``bars``."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager",
                               "local", "--host", "127.0.0.1", "-p", str(port)],
                              env={**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "the model server did not answer /ping in 120 s"
                time.sleep(0.5)
        body = json.dumps({"dataframe_split": json.loads(bars.to_json(orient="split", index=False))}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return pd.DataFrame(json.loads(answer.read())["predictions"])
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_from_a_model_sweep_to_a_served_signal(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    csv, other = tmp_path / "bars.csv", tmp_path / "other.csv"
    bars = write_bars(csv, seed=11)
    write_bars(other, seed=12)
    fast = ["+strategy=momentum", "model=linear", "trainer.epochs=2", "experiment_name=lineage", "data=csv"]
    done = run_cli(["runner", "-m", *fast, f"data.path={csv}", "strategy.lookback=10,20", "sweep_name=s"], cli_env,
                   tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_cli(["runner", *fast, f"data.path={other}", "strategy.lookback=10"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lineage").experiment_id
    runs = [r for r in client.search_runs([experiment]) if r.data.tags.get("runner.role") != "sweep_parent"]
    inputs = {r.info.run_id: {i.tags[0].value: i.dataset for i in r.inputs.dataset_inputs} for r in runs}
    assert all(list(found) == ["bars", "train", "validation", "test"] for found in inputs.values())
    by_file = {}
    for run in runs:
        bars_input = inputs[run.info.run_id]["bars"]
        assert bars_input.digest == run.data.tags["data_digest"] and bars_input.source_type == "local"
        by_file.setdefault(json.loads(bars_input.source)["uri"], set()).add(bars_input.digest)
    assert {uri: len(digests) for uri, digests in by_file.items()} == {csv.as_uri(): 1, other.as_uri(): 1}
    assert by_file[csv.as_uri()] != by_file[other.as_uri()]
    mixed = report([], cli_env, tmp_path)
    assert mixed.returncode == 0 and "these runs mix data: 2 data digests" in mixed.stdout

    ranked = json.loads(report(["--sweep", "s", "--json"], cli_env, tmp_path).stdout)
    winner, dsr = ranked["runs"][0]["run_id"], ranked["runs"][0]["deflated_sharpe_ratio"]
    assert dsr < 0.95 and not ranked["mixed_data"]  # no edge in a random walk: a weak winner
    refused = report(["--sweep", "s", "--register", "mom", "--alias", "champion", "--gate"], cli_env, tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert f"--gate: run {winner} not registered: deflated Sharpe {dsr:.4f} < 0.95" in refused.stderr
    assert client.search_registered_models() == []  # nothing registered

    done = report(["--sweep", "s", "--register", "mom", "--alias", "champion"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())  # the report wraps its lines at 100 columns
    assert "strategy as version 1 of model 'mom', alias 'champion'" in said
    assert "\n  models:/mom/1  models:/mom@champion\n" in done.stdout
    version = client.get_model_version_by_alias("mom", "champion")
    assert int(version.version) == 1 and version.run_id == winner
    assert version.tags["run_id"] == winner and version.tags["data_digest"] == by_file[csv.as_uri()].pop()
    assert version.tags["runner.engine_version"] and "deflated_sharpe_ratio" in version.tags
    parent = client.get_run(client.get_run(winner).data.tags["mlflow.parentRunId"])
    pvalue = parent.data.metrics["spa_pvalue"]  # the sweep's reality check: the gate's second test
    checked = report(["--sweep", "s", "--register", "mom", "--gate", "--gate-dsr", "0", "--gate-pvalue",
                      str(pvalue / 2)], cli_env, tmp_path)
    assert checked.returncode == 2 and f"reality check: its sweep's SPA p-value {pvalue:.4f} >" in checked.stderr
    again = report(["--sweep", "s", "--register", "mom", "--gate", "--gate-dsr", "0", "--gate-pvalue", "1"],
                   cli_env, tmp_path)  # clears DSR and p-value, but is the champion itself: not better than it
    assert again.returncode == 2 and "is not better than mom@champion's" in again.stderr
    other_run = next(r for r in runs if json.loads(inputs[r.info.run_id]["bars"].source)["uri"] == other.as_uri())
    elsewhere = report(["--digest", other_run.data.tags["data_digest"], "--register", "mom", "--gate", "--gate-dsr",
                        "0"], cli_env, tmp_path)
    assert elsewhere.returncode == 2 and "was measured on other data" in elsewhere.stderr
    assert len(client.search_model_versions("name = 'mom'")) == 1

    expected = logged_weights(client, winner, tmp_path)
    answer = serve("models:/mom@champion", cli_env, tmp_path, bars.iloc[-400:])
    assert len(answer) == 400 and list(answer.columns) == ["date", "weight"]
    lookback = int(client.get_run(winner).data.params["strategy.lookback"])
    assert not answer["weight"].to_numpy()[:lookback].any()  # warm-up bars hold nothing
    np.testing.assert_allclose(answer["weight"].to_numpy()[lookback + 1:], expected[-400 + lookback + 1:], rtol=0,
                               atol=1e-9)

    signal = run_cli(["runner.signal", "models:/mom@champion", "data=csv", f"data.path={csv}", "--json"], cli_env,
                     tmp_path)
    assert signal.returncode == 0, signal.stderr
    latest = json.loads(signal.stdout)
    assert latest["after_bar"].startswith(bars["date"].iloc[-1]) and latest["bars"] == len(bars)
    assert latest["weights"] == {"csv": pytest.approx(expected[-1], abs=1e-9)}


def test_a_registered_universe_rule_serves_weights_per_symbol(tmp_path: Path, cli_env: dict,
                                                               tracking_uri: str, monkeypatch) -> None:
    import mlflow.pyfunc

    from runner.data.loader import load_data
    from runner.serving.strategy import long_bars
    from tests.conftest import data_config

    data = ["data=synthetic_universe", "data.n_assets=4", "data.n_bars=400", "seed=3"]
    done = run_cli(["runner", "+strategy=xs_momentum", "strategy.lookback=20", "model=none", *data,
                    "experiment_name=lineage"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    done = report(["--register", "xs", "--alias", "champion"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking_uri)
    run_id = client.get_model_version_by_alias("xs", "champion").run_id
    logged = pd.read_parquet(client.download_artifacts(run_id, "backtest/weights.parquet", str(tmp_path)))
    expected = logged.pivot(index="timestamp", columns="symbol", values="weight").reindex(columns=[
        "A0", "A1", "A2", "A3"]).fillna(0.0)

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    book = load_data(data_config("synthetic_universe", seed=3, n_assets=4, n_bars=400), "synthetic_universe")
    served = mlflow.pyfunc.load_model("models:/xs@champion").predict(long_bars(book))
    assert list(served.columns) == ["date", "symbol", "weight"] and len(served) == 4 * 400
    grid = served.pivot(index="date", columns="symbol", values="weight")
    held = grid.reindex(expected.index)
    np.testing.assert_allclose(held.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    assert not grid.drop(expected.index).to_numpy().any()  # bars the table leaves out hold nothing

    signal = run_cli(["runner.signal", "models:/xs@champion", *data], cli_env, tmp_path)
    assert signal.returncode == 0, signal.stderr
    assert signal.stdout.splitlines()[0].startswith("models:/xs@champion: hold after the close of ")
    assert len(signal.stdout.splitlines()) == 5  # the bar, then one weight per symbol


def test_a_sweep_over_two_files_says_its_winner_mixes_data(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    from runner.logger import MLflowLogger

    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for seed, file in enumerate(files):
        write_bars(file, seed=21 + seed)
    done = run_cli(["runner", "-m", "+strategy=momentum", "model=none", "data=csv",
                    f"data.path={files[0]},{files[1]}", "experiment_name=mixed"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "these configurations mix data: 2 data digests" in done.stdout
    best = MLflowLogger("mixed", tracking_uri).get_best_run("val_sharpe_ratio")
    assert best["mixed_data"] and best["data_digest"]
