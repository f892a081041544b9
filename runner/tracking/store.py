"""Where the MLflow store lives, how a fresh one is opened safely, and whether a server answers.

Default: ``sqlite:///<launch dir>/outputs/mlflow.db`` with artifacts in ``<launch dir>/outputs/mlartifacts``;
a sqlite store keeps its artifacts beside the database file; a server keeps its own artifact root.
No MLflow import here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from runner.errors import NotFoundError, UserError

T = TypeVar("T")
# sqlite takes one writer at a time. MLflow's sessions wait up to 20 s for the lock (PRAGMA busy_timeout), but a
# transaction that read first and then writes is refused at once while another process writes; so each write of
# a run is tried again, waiting 0.5, 1, 2, 4, then 5 s between tries, for LOCKED_WAIT_SECONDS in all.
LOCKED_WAIT_SECONDS = 120.0


class StoreBusy(UserError):
    """A sqlite store stayed locked by other processes' writes for longer than ``LOCKED_WAIT_SECONDS``."""

HEALTH_TIMEOUT_SECONDS = 5.0
# What MLflow's UI reads: a model-development experiment (not GenAI traces), with a short description.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   "mlflow.note.content": "Trading experiments from the config-driven runner: one run per backtest, "
                                          "sweeps as parent runs with their jobs as children."}
# MLflow's documented HTTP settings, unless the user set them: a server back within ~30 s is ridden out
# (retries after 0, 2, 4, 8, 16 and 32 s, plus up to 1 s of jitter each), one gone for good is given up on
# about a minute after the first failed request (MLflow's own defaults keep retrying for ~4 minutes).
HTTP_RETRY_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "6", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
                       # the runner prints its own links (ui_links); MLflow's "View run ..." lines repeat them
                       "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class _OneRetryNotice(logging.Filter):
    """Replaces urllib3's warning per retry with one line (the first); the rest say nothing new."""

    shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Retrying ("):
            return True
        if not _OneRetryNotice.shown:
            _OneRetryNotice.shown = True
            print("warning: the tracking server is not answering; retrying for about a minute", file=sys.stderr)
        return False


def bounded_http_retries() -> None:
    """Apply ``HTTP_RETRY_DEFAULTS`` where the environment does not set them, and quiet the retry warnings."""
    for key, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("urllib3.connectionpool").addFilter(_OneRetryNotice())


def is_locked(error: BaseException) -> bool:
    """sqlite's "database is locked", however MLflow and SQLAlchemy wrap it."""
    return "database is locked" in str(error)


def when_unlocked(call: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``call(*args, **kwargs)``, tried again while a sqlite store is locked by another process's write, for
    ``LOCKED_WAIT_SECONDS`` at most; then one line that says sqlite cannot serve this many writers at once."""
    started, delay = time.monotonic(), 0.5
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not is_locked(error):
                raise
            waited = time.monotonic() - started
            if waited > LOCKED_WAIT_SECONDS:
                raise StoreBusy(f"the sqlite store stayed locked by other processes' writes for {waited:.0f} s: "
                                "sqlite takes one writer at a time, too few for this many runs at once; log to a "
                                "tracking server instead (tracking=server, README 'Running an MLflow server "
                                "safely'), or run fewer jobs at once.") from None
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


def launch_dir() -> Path:
    """Where the user launched the command: the working directory, which Hydra never changes here
    (``hydra.job.chdir: false``); a Ray job enters it from its sweep's state first (``runner.sweeps.cluster``)."""
    return Path.cwd().resolve()


def default_tracking_uri(base: Path | None = None) -> str:
    """The project store: ``sqlite:///<launch dir>/outputs/mlflow.db``."""
    return f"sqlite:///{(base or launch_dir()) / 'outputs' / 'mlflow.db'}"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """Argument, then ``MLFLOW_TRACKING_URI``, then the project default."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts beside a sqlite database (``<db dir>/mlartifacts``); a server keeps its own root."""
    db_path = sqlite_path(tracking_uri)
    return (db_path.parent / "mlartifacts").resolve().as_uri() if db_path else None


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a sqlite store while its schema and experiment are created
    (processes racing to create a fresh sqlite schema crash)."""
    db_path = sqlite_path(tracking_uri)
    if db_path is None:
        yield
        return
    from filelock import FileLock

    # MLflow announces at INFO that it creates or migrates the schema: the runner's own output says what matters.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    with FileLock(str(db_path) + ".lock"):
        yield


def check_tracking_server(uri: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> None:
    """For http(s) URIs, GET ``<uri>/health``; raise LookupError with a fix-it message if it fails
    (MLflow alone retries for minutes before it reports an unreachable server)."""
    if not uri.startswith(("http://", "https://")):
        return
    from runner.tracking.sanitize import redact_uri

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"answered HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        problem = f"is unreachable ({getattr(error, 'reason', error)})"
    raise NotFoundError(f"tracking server {redact_uri(uri)} {problem}. Start it (mlflow server --host 127.0.0.1) "
                      "or use tracking=local / unset MLFLOW_TRACKING_URI.")


def local_path(uri: str | None) -> Path | None:
    """The folder or file of a ``file:`` (or plain path) artifact URI; None for remote stores."""
    if not uri:
        return None
    parsed = urllib.parse.urlparse(uri)
    return Path(urllib.parse.unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def ui_links(tracking_uri: str, experiment_id: str, run_id: str | None = None, label: str = "this run") -> list[str]:
    """What a user opens: the ``mlflow ui`` command for a local store, then the experiment's runs in MLflow's
    training view (MLflow 3 otherwise opens on its GenAI traces page) and the run itself."""
    from runner.tracking.sanitize import redact_uri

    remote = tracking_uri.startswith(("http://", "https://"))
    base = redact_uri(tracking_uri).rstrip("/") if remote else "http://127.0.0.1:5000"
    lines = [] if remote else [f"open it: mlflow ui --backend-store-uri {redact_uri(tracking_uri)}   then:"]
    lines.append(f"  runs: {base}/#/experiments/{experiment_id}?workflowType=machine_learning")
    if run_id:
        lines.append(f"  {label}: {base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning")
    return lines
