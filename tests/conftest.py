"""Shared fixtures: every test gets its own real sqlite MLflow store under tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300):
    import subprocess

    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
