"""Where the MLflow store lives and how it is opened safely (no MLflow import here).

Default: ``sqlite:///<launch dir>/outputs/mlflow.db`` with artifacts in ``<launch dir>/outputs/mlartifacts``;
a sqlite store keeps its artifacts beside the database file; a server keeps its own artifact root.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; sqlite's own locking remains
    fcntl = None  # type: ignore[assignment]


def launch_dir() -> Path:
    """Where the user launched the command (Hydra never changes cwd with version_base 1.3)."""
    return Path(os.environ.get("RUNNER_LAUNCH_DIR", os.getcwd())).resolve()


def default_tracking_uri(base: Path | None = None) -> str:
    """The project store: ``sqlite:///<launch dir>/outputs/mlflow.db``."""
    return f"sqlite:///{(base or launch_dir()) / 'outputs' / 'mlflow.db'}"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """Argument, then ``MLFLOW_TRACKING_URI``, then the project default."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts beside a sqlite database (``<db dir>/mlartifacts``); a server keeps its own root."""
    if tracking_uri.startswith("sqlite:///"):
        db_path = Path(tracking_uri[len("sqlite:///"):])
        return (db_path.parent / "mlartifacts").resolve().as_uri()
    return None


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a sqlite store while its schema and experiment are created."""
    if not tracking_uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    lock_path = Path(tracking_uri[len("sqlite:///"):] + ".lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
