"""Shared fixtures: every test gets its own real sqlite MLflow store under tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import subprocess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    # MLflow keeps the URI an earlier test set (mlflow.set_tracking_uri) as its process-wide default; clients
    # made without one (MLflow's own artifact repositories do that) would read that test's store.
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture()
def cli_env(tmp_path: Path, tracking_uri: str) -> dict[str, str]:
    """Environment for running the real CLI in a subprocess against the temp store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update({"MLFLOW_TRACKING_URI": tracking_uri, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_running(tracking_uri: str, process: subprocess.Popen | None = None, tag: tuple[str, str] | None = None,
                     deadline: float = 120) -> str:
    """The id of a RUNNING run (carrying ``tag`` when given), polled read-only with sqlite3: an MlflowClient made
    here while the CLI creates a fresh store's schema would race it, and either side can crash. A ``process``
    that ends first fails the wait with its stderr."""
    import sqlite3
    import time

    db = Path(tracking_uri[len("sqlite:///"):])
    query = "SELECT run_uuid FROM runs WHERE status = 'RUNNING'"
    if tag is not None:
        query += " AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)"
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        assert process is None or process.poll() is None, process.communicate()[1][-3000:]
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
                    row = connection.execute(query, tag or ()).fetchone()
                if row:
                    return row[0]
            except sqlite3.Error:
                pass  # the schema is still being created
        time.sleep(0.3)
    raise AssertionError(f"no RUNNING run{f' tagged {tag}' if tag else ''} within {deadline} s")


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300):
    import subprocess

    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def data_config(option: str, seed: int = 0, **keys: object) -> dict:
    """``conf/data/OPTION.yaml`` as the runner gets it (its keys, the shared rules' defaults, ``${seed}`` set),
    with ``keys`` overriding: the input of ``runner.data.loader.load_data``."""
    import dataclasses

    import yaml

    from runner.config.schema import DataRules, UniverseRules

    values = yaml.safe_load((ROOT / "conf" / "data" / f"{option}.yaml").read_text())
    defaults = values.pop("defaults", [])
    config = dataclasses.asdict(DataRules())
    if any("universe_rules" in str(d) for d in defaults):
        config.update(dataclasses.asdict(UniverseRules()))
    config.update({k: seed if v == "${seed}" else v for k, v in values.items()})
    config.update(keys)
    return config


def synthetic_frames(n_assets: int, n_bars: int, seed: int = 0, **keys: object) -> dict:
    """The frames of ``data=synthetic_universe`` with these keys (its YAML's values for the rest), unaligned."""
    from runner.data.sources import SyntheticUniverse

    config = data_config("synthetic_universe", seed=seed, n_assets=n_assets, n_bars=n_bars, **keys)
    shared = ("_target_", "start", "end", "splits", "max_fill", "resample")
    return SyntheticUniverse(**{k: v for k, v in config.items() if k not in shared}).load()
