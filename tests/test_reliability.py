"""Hostile input, signals, stale runs, concurrency and secrets, through the real CLI."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from runner.tracking.sanitize import REDACTED
from tests.conftest import ROOT, run_cli, wait_for_running

if TYPE_CHECKING:
    from omegaconf import DictConfig


def _csv(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _good_rows(n: int = 400) -> str:
    dates = pd.bdate_range("2015-01-01", periods=n).strftime("%Y-%m-%d")
    closes = 100 * np.exp(np.cumsum(0.01 * np.random.default_rng(0).standard_normal(n)))
    return "date,close\n" + "\n".join(f"{d},{c:.4f}" for d, c in zip(dates, closes, strict=True)) + "\n"


BAD_INPUTS = [
    (["+strategy=nosuch"], r"strategy=nosuch is not an option of strategy; allowed: buy_and_hold, equal_weight, "
                           r"inverse_volatility, mean_reversion"),
    (["+strategy=momentum", "model=nosuch"], r"model=nosuch is not an option of model; allowed: linear, lstm"),
    (["+strategy=momentum", "data=nosuch"], r"data=nosuch is not an option of data; allowed: bundled_universe, csv, "
                                            r"nasdaq"),
    (["+strategy=momentum", "evaluation=nosuch"], r"allowed: cpcv, holdout, walk_forward"),
    (["+strategy=momentum", "strategy.lookbak=5"], "lookbak"),
    (["+strategy=momentum", "+strategy.lookbak=5"], "Did you mean strategy.lookback"),
    (["+strategy=momentum", "backtest.comission=0.1"], "comission"),
    (["+strategy=momentum", "backtest.commission=abc"], "commission"),
    (["+strategy=momentum", "strategy.lookback=abc"], "strategy.lookback must be an integer"),
    (["+strategy=momentum", "strategy.lookback=0"], "strategy.lookback must be >= 1"),
    (["+strategy=momentum", "strategy.lookback=-3"], "strategy.lookback must be >= 1"),
    (["+strategy=sma_crossover", "strategy.fast=50", "strategy.slow=20"], "strategy.fast must be < strategy.slow"),
    (["+strategy=mean_reversion", "strategy.window=1"], "strategy.window must be >= 2"),
    (["+strategy=momentum", "backtest.commission=-0.01"], "backtest.commission must be >= 0"),
    (["+strategy=momentum", "backtest.slippage=-1"], "backtest.slippage must be >= 0"),
    (["+strategy=momentum", "data.splits=[0.5,0.2,0.2]"], "must be non-negative and sum to 1"),
    (["+strategy=momentum", "selection.mode=best"], "selection.mode='best' is not valid; allowed: max, min"),
    (["+strategy=momentum", "trainer.device=tpu", "model=mlp"], "trainer.device='tpu' is not valid"),
    (["+strategy=momentum", "model=mlp", "model.dropout=1.5"], "model.dropout must be in"),
    (["+strategy=momentum", "model=lstm", "+model.hiden_size=3"], "Did you mean model.hidden_size"),
    (["+strategy=momentum", "data.start=2030-01-01"], "no bars between"),
    (["+strategy=momentum", "strategy.lookback=4000"], "too few bars"),
    (["+strategy=momentum", "data=csv"], "data.path"),
    (["+strategy=momentum", "data=csv", "data.path=/no/such/file.csv"], "no such file"),
    (["+strategy=momentum", "data=csv", "data.path={empty}"], "is empty"),
    (["+strategy=momentum", "data=csv", "data.path={binary}"], "could not be parsed|does not hold dates|no 'close'"),
    (["+strategy=momentum", "data=csv", "data.path={noclose}"], "no 'close' column"),
    (["+strategy=momentum", "data=csv", "data.path={negative}"], "non-positive or non-finite prices at 2015-01-02"),
    (["+strategy=momentum", "data=csv", "data.path={nan}"], "non-positive or non-finite prices at 2015-01-02"),
    (["+strategy=momentum", "data=csv", "data.path={dups}"], "duplicate timestamps"),
    (["+strategy=momentum", "data=csv", "data.path={short}"], "too few bars"),
    (["+strategy=momentum", "tracking=server", "tracking.uri=http://127.0.0.1:9"], "tracking server"),
    (["+strategy=momentum", "model.epochs=5"], "model.epochs has moved to the trainer group: use trainer.epochs=5"),
    (["+strategy=momentum", "model=mlp", "model.epoch=5"],
     "allowed: hidden_sizes, dropout.*Training keys are under trainer: epochs.*Did you mean trainer.epochs"),
    (["+strategy=momentum", "trainer.epoch=5"],
     "allowed: epochs, batch_size, lr, weight_decay, patience, device. Did you mean trainer.epochs"),
    (["+strategy=momentum", "model=mlp", "data.splits=[0.8,0.0,0.2]"], "leaves no validation segment"),
    (["+strategy=momentum", "backtest.periods_per_year=daily"], "backtest.periods_per_year must be auto or a number"),
]


@pytest.mark.slow
def test_a_periods_per_year_far_from_the_bars_density_warns(tmp_path: Path, cli_env: dict) -> None:
    done = run_cli(["runner", "+strategy=momentum", "model=none", "data.start=2015-01-01",
                    "backtest.periods_per_year=52"], cli_env, tmp_path)
    assert done.returncode == 0 and "backtest.periods_per_year=52, but these bars come about 252 a year" in done.stderr


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_input_gets_one_clear_message(overrides, message, tmp_path: Path, cli_env: dict, tracking_uri: str):
    files = {"empty": _csv(tmp_path, "empty.csv", ""), "binary": _csv(tmp_path, "bin.csv", os.urandom(2000)),
             "noclose": _csv(tmp_path, "noclose.csv", "date,open\n2015-01-01,1\n"),
             "negative": _csv(tmp_path, "neg.csv", "date,close\n2015-01-01,1\n2015-01-02,-1\n"),
             "nan": _csv(tmp_path, "nan.csv", "date,close\n2015-01-01,1\n2015-01-02,nan\n"),
             "dups": _csv(tmp_path, "dups.csv", "date,close\n2015-01-01,1\n2015-01-01,2\n"),
             "short": _csv(tmp_path, "short.csv", _good_rows(30))}
    args = ["runner", "model=none", *[o.format(**files) for o in overrides]]
    if "tracking=server" in overrides:  # MLFLOW_TRACKING_URI would override the configured server
        cli_env = {k: v for k, v in cli_env.items() if k != "MLFLOW_TRACKING_URI"}
    started = time.monotonic()
    done = run_cli(args, cli_env, tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr  # every user error, Hydra's composition errors included
    assert "Traceback" not in done.stderr, done.stderr
    import re

    assert re.search(message, done.stderr), done.stderr
    assert time.monotonic() - started < 60  # an unreachable server is detected in seconds
    db = Path(tracking_uri[len("sqlite:///"):])
    if db.exists():  # nothing may be left RUNNING (validation happens before any run exists)
        client = MlflowClient(tracking_uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(ids, "attributes.status = 'RUNNING'")


def test_cuda_without_cuda_fails_before_any_run(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    done = run_cli(["runner", "+strategy=momentum", "model=mlp", "trainer.device=cuda"], cli_env, tmp_path)
    assert done.returncode == 2 and "trainer.device=cuda but CUDA is not available" in done.stderr
    assert not Path(tracking_uri[len("sqlite:///"):]).exists()  # refused before any MLflow run


@pytest.mark.slow
def test_unsorted_csv_is_sorted_and_runs(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    rows = _good_rows(400).splitlines()
    path = _csv(tmp_path, "unsorted.csv", "\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    done = run_cli(["runner", "+strategy=momentum", "model=none", "data=csv", f"data.path={path}"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sorted them by timestamp" in done.stderr


LONG_TRAINING = ["runner", "+strategy=momentum", "model=mlp", "trainer.epochs=100000", "trainer.patience=100000"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signals_during_training_end_the_run_killed(sig, tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    process = subprocess.Popen([sys.executable, "-m", *LONG_TRAINING], cwd=tmp_path, env=cli_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = wait_for_running(tracking_uri)
        time.sleep(1.0)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + sig, stderr  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert run.info.status == "KILLED" and sig.name in run.data.tags.get("error", "") + stderr


@pytest.mark.slow
def test_sigkill_leaves_a_stale_run_that_the_report_marks_killed(tmp_path: Path, cli_env: dict,
                                                                 tracking_uri: str) -> None:
    process = subprocess.Popen([sys.executable, "-m", *LONG_TRAINING], cwd=tmp_path, env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_id = wait_for_running(tracking_uri)
    process.kill()
    process.wait(timeout=30)
    dry = run_cli(["runner.report", "--stale", "--json"], cli_env, tmp_path)
    assert json.loads(dry.stdout)["stale_runs"][0]["run_id"] == run_id
    assert MlflowClient(tracking_uri).get_run(run_id).info.status == "RUNNING"  # dry run by default
    marked = run_cli(["runner.report", "--stale", "--mark"], cli_env, tmp_path)
    assert marked.returncode == 0 and "marked KILLED" in marked.stdout
    assert MlflowClient(tracking_uri).get_run(run_id).info.status == "KILLED"


@pytest.mark.slow
def test_four_parallel_processes_on_a_fresh_sqlite_store(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    processes = [subprocess.Popen([sys.executable, "-m", "runner", "+strategy=momentum", "model=none",
                                   f"strategy.lookback={5 + i}", "data.start=2012-01-01"], cwd=tmp_path, env=cli_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], [err[-2000:] for _, err in results]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    assert sorted(r.data.params["strategy.lookback"] for r in runs) == ["5", "6", "7", "8"]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_secrets_never_reach_params_tags_or_artifacts(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    env = {**cli_env, "RUNNER_TEST_TOKEN": "sup3r-secret-token"}
    done = run_cli(["runner", "+strategy=momentum", "model=none", "data.start=2014-01-01",
                    "+api_key=plain-secret-key", "+extra.password=hunter2-pass",
                    "+extra.endpoint=${oc.env:RUNNER_TEST_TOKEN}", "+extra.db=postgresql://bob:pw-in-uri@db/x"],
                   env, tmp_path)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])[0]
    secrets = ("sup3r-secret-token", "plain-secret-key", "hunter2-pass", "pw-in-uri")
    visible = json.dumps([run.data.params, run.data.tags])
    artifacts_root = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    for file in artifacts_root.rglob("*"):
        if file.is_file() and file.suffix in (".json", ".yaml", ".txt"):
            visible += file.read_text()
    # Each secret's place is really logged, with the value redacted: the overrides and argv tags, the
    # resolved config.yaml and Hydra's three files.
    import yaml

    logged_config = yaml.safe_load((artifacts_root / "config.yaml").read_text())
    assert logged_config["api_key"] == logged_config["extra"]["password"] == REDACTED
    assert logged_config["extra"]["endpoint"] == REDACTED
    assert logged_config["extra"]["db"] == f"postgresql://{REDACTED}@db/x"
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert REDACTED in (artifacts_root / ".hydra" / name).read_text(), name
    for tag in ("overrides", "argv"):
        assert f"+extra.password={REDACTED}" in run.data.tags[tag] and f"+api_key={REDACTED}" in run.data.tags[tag]
    for secret in secrets:
        assert secret not in visible, secret
        assert secret not in done.stdout + done.stderr, secret


def test_a_crafted_pickle_is_refused(tmp_path: Path, tracking_uri: str) -> None:
    import mlflow.pytorch
    import torch

    from runner.tracking.model_io import load_torch_model

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    model_dir = tmp_path / "model"
    mlflow.pytorch.save_model(torch.nn.Linear(2, 1), str(model_dir), serialization_format="pickle")
    data_file = next(model_dir.rglob("model.pth"))
    data_file.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(Exception, match="(?i)pickle"):
        load_torch_model(str(model_dir))
    assert not marker.exists()


def test_help_lists_the_groups_without_heavy_imports(tmp_path: Path, cli_env: dict) -> None:
    """`--help` answers from conf/ without composing (speed is measured in bench/run.py, not here)."""
    done = run_cli(["runner", "--help"], cli_env, tmp_path)
    assert done.returncode == 0 and "config groups" in done.stdout
    for name in ("momentum", "sma_crossover", "mean_reversion", "buy_and_hold", "lstm", "synthetic"):
        assert name in done.stdout
    check = subprocess.run([sys.executable, "-c", "import runner.__main__, sys; "
                            "print(sorted(m for m in ('torch','mlflow','matplotlib') if m in sys.modules))"],
                           cwd=ROOT, capture_output=True, text=True, env=cli_env)
    assert check.stdout.strip() == "[]", check.stdout + check.stderr


def test_a_signal_swallowed_in_a_finaliser_still_stops_the_run() -> None:
    """Python prints and drops an exception raised inside a finaliser (here a ``weakref.finalize`` callback); the
    recorded request still stops."""
    import weakref

    from runner.tracking.lifecycle import Terminated, check_stop, signals_as_interrupts

    class Collected:
        pass

    reached_check = False
    with signals_as_interrupts():
        with pytest.raises(Terminated, match="SIGTERM"):
            collected = Collected()
            weakref.finalize(collected, os.kill, os.getpid(), signal.SIGTERM)
            del collected  # the handler's raise happens inside the finaliser and is swallowed
            sum(range(100_000))  # plain work: nothing raises here
            reached_check = True
            check_stop()
    assert reached_check  # the stop came from the recorded request, not from the lost raise
    check_stop()  # the check above delivered it: nothing is left pending


def test_a_stop_swallowed_after_the_runs_last_check_still_ends_it_killed(tmp_path: Path) -> None:
    """A stop swallowed (here in a finaliser) after the run's last ``check_stop``: its code ends normally, and the run
    still ends KILLED with the stop raised on (never FINISHED, nor a sweep going on to its next job)."""
    import weakref

    from runner.tracking.lifecycle import Terminated, check_stop, tracked_run
    from runner.tracking.logger import MLflowLogger

    class Collected:
        pass

    logger = MLflowLogger("stops", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = logger.start_run("swallowed")
    ran_to_its_end = False
    with pytest.raises(Terminated, match="SIGTERM"):
        with tracked_run(logger):
            collected = Collected()
            weakref.finalize(collected, os.kill, os.getpid(), signal.SIGTERM)
            del collected  # the handler's raise happens inside the finaliser and is swallowed
            sum(range(100_000))
            ran_to_its_end = True
    assert ran_to_its_end
    assert MlflowClient(logger.tracking_uri).get_run(run.info.run_id).info.status == "KILLED"
    check_stop()  # delivered once: nothing left pending


def test_a_signal_inside_a_del_is_raised_as_it_returns() -> None:
    """``__del__`` (tqdm's bar, freed as a model's training returns) is never interrupted: the stop is raised in the
    frame that freed the object, as soon as ``__del__`` has run to its end."""
    from runner.tracking.lifecycle import Terminated, signals_as_interrupts

    steps: list[str] = []

    class SignalsWhileCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("__del__ ran to its end")

    with pytest.raises(Terminated, match="SIGTERM"):
        with signals_as_interrupts():
            finaliser = SignalsWhileCollected()
            del finaliser
            steps.append("the next line ran")
    assert steps == ["__del__ ran to its end"]


def stopped_while(work: Callable[[], object], signum: int, delay: float) -> BaseException | None:
    """Send ``signum`` to this process after ``delay`` seconds while ``work`` runs again and again (for at most 5 s),
    with the runner's handlers on; the stop raised (None: none came)."""
    import threading

    from runner.tracking.lifecycle import Terminated, signals_as_interrupts

    timer = threading.Timer(delay, os.kill, (os.getpid(), signum))
    stopped = None
    try:
        with signals_as_interrupts():  # as a tracked run's: the stop leaves the section, caught outside it
            timer.start()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                work()
    except Terminated as stop:
        stopped = stop
    timer.join()
    return stopped


def test_a_signal_never_stops_omegaconf_halfway_through_changing_a_config() -> None:
    """SIGTERM landing while OmegaConf sets a list (what Hydra does composing a job's config) is raised just after
    OmegaConf is done, never inside it: the config is whole, the stop is the one raised."""
    import traceback

    from omegaconf import OmegaConf

    for attempt in range(20):
        config = OmegaConf.create({"bars": list(range(2000)), "other": {"a": 1}})

        def set_bars(config: DictConfig = config) -> None:
            config.bars = list(range(2000))  # ListConfig._set_value: OmegaConf restores it on Exception only

        stopped = stopped_while(set_bars, signal.SIGTERM, 0.005 + attempt * 0.002)
        assert stopped is not None and str(stopped) == "received SIGTERM"
        last = traceback.extract_tb(stopped.__traceback__)[-1]
        assert "omegaconf" not in last.filename, last
        assert len(config.bars) == 2000 and config.bars[1999] == 1999 and config.other.a == 1


def test_a_signal_never_stops_sqlalchemy_inside_a_statement(tmp_path: Path) -> None:
    """SIGINT landing while MLflow writes to its sqlite store is raised once SQLAlchemy is out of the statement:
    the store's session rolls back, and the same process can still write (no "database is locked")."""
    import itertools
    import traceback

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("stops")).info.run_id
    steps = itertools.count(1)  # each write a new value
    for attempt in range(10):
        stopped = stopped_while(lambda: client.set_tag(run_id, "step", str(next(steps))), signal.SIGINT,
                                0.01 + attempt * 0.003)
        assert stopped is not None
        assert "sqlalchemy" not in traceback.extract_tb(stopped.__traceback__)[-1].filename
        client.set_tag(run_id, "after", str(attempt))  # the store is not left locked
    assert client.get_run(run_id).data.tags["after"] == "9"
