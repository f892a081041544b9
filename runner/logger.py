"""`MLflowLogger`: the only module that talks to MLflow.

Fixes over the original sketch: tables are `.json` (MLflow 3 rejects `.csv` tables), `get_best_run` reads
plain dicts from one indexed query (no `.metrics` on a DataFrame row), `log_params` never mutates its
input, and `log_backtest_results` logs `results["metrics"]` as MLflow metrics so runs can be ranked.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; sqlite's own locking remains
    fcntl = None  # type: ignore[assignment]

from runner.best_run import best_run
from runner.model_io import log_torch_model
from runner.params import REDACTED, redact_value, to_jsonable

# MLflow's limits (mlflow/utils/validation.py), named once here.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_KEY_PATTERN = re.compile(r"^[/\w.\- :]+$")
LONG_PARAMS_ARTIFACT = "params/long_params.json"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


class NoActiveRunError(LookupError):
    """Raised when logging is attempted with no run started (MLflow would silently start one)."""


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


def validate_key(key: Any, kind: str) -> str:
    """Check a param/metric/tag key against MLflow's rules, with a message that says how to fix it."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"{kind} key {key!r} must be a non-empty string.")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"{kind} key {key[:40]!r}... is {len(key)} chars; MLflow allows {MAX_KEY_LENGTH}.")
    if not _KEY_PATTERN.match(key) or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(
            f"{kind} key {key!r} is not valid in MLflow: use letters, digits, '_', '-', '.', ' ', ':' or '/' "
            "(e.g. 'val_sharpe_ratio', not 'val sharpe %')."
        )
    return key


def _param_text(value: Any) -> str:
    """One param value as MLflow text: JSON for containers, plain str for scalars."""
    plain = to_jsonable(value)
    if isinstance(plain, (dict, list)):
        return json.dumps(plain, sort_keys=True, allow_nan=False)
    return "None" if plain is None else str(plain)


def _metric_value(key: str, value: Any) -> float:
    """A metric as float; inf is mapped to NaN (MLflow would store 1.8e308, winning every max search)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__} {value!r}.")
    number = float(value)
    if math.isinf(number):
        warnings.warn(f"metric {key!r} is {number}; logged as NaN so it can never win a search.",
                      stacklevel=3)
        return math.nan
    return number


class MLflowLogger:
    """A run-scoped MLflow client: one experiment, one active run, batched writes."""

    def __init__(self, experiment_name: str, tracking_uri: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        if not isinstance(experiment_name, str) or not experiment_name.strip():
            raise ValueError(f"experiment_name must be a non-empty string, got {experiment_name!r}.")
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self._mlflow = mlflow
        self.experiment_name = experiment_name
        with _store_lock(self.tracking_uri):  # processes racing to create a fresh sqlite schema crash
            self.client = MlflowClient(self.tracking_uri)  # creates (or migrates) the store's schema
            self.experiment_id = self._get_or_create_experiment(experiment_name)
        self.run_id: str | None = None

    @classmethod
    def open_existing(cls, experiment_name: str, tracking_uri: str | None = None) -> MLflowLogger:
        """A logger on an experiment that must already exist (reports never create stores or experiments)."""
        from mlflow import MlflowClient

        uri = resolve_tracking_uri(tracking_uri)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
            raise LookupError(f"no MLflow store at {uri}: run an experiment first, or pass --tracking-uri.")
        experiment = MlflowClient(uri).get_experiment_by_name(experiment_name)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            names = [e.name for e in MlflowClient(uri).search_experiments(max_results=20)]
            raise LookupError(f"no experiment named {experiment_name!r} in {uri}; experiments: {', '.join(names)}.")
        return cls(experiment_name, uri)

    def _get_or_create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_root_for(self.tracking_uri))
        except MlflowException:  # created concurrently by another process: fetch it
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    # ----- run lifecycle -------------------------------------------------------------------------
    def start_run(self, run_name: str | None = None, tags: Mapping[str, str] | None = None,
                  parent_run_id: str | None = None) -> Any:
        """Start a run (default name ``run_YYYYmmdd_HHMMSS``) and make it MLflow's active run."""
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} is still active; call end_run() first.")
        run_tags = {str(k): str(redact_value(k, v))[:MAX_TAG_VALUE_LENGTH] for k, v in (tags or {}).items()}
        if parent_run_id:
            run_tags["mlflow.parentRunId"] = parent_run_id
        self._mlflow.set_tracking_uri(self.tracking_uri)
        run = self._mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=run_name or datetime.now().strftime("run_%Y%m%d_%H%M%S"),
            tags=run_tags,
        )
        self.run_id = run.info.run_id
        return run

    def attach(self, run_id: str) -> None:
        """Log into an existing run (e.g. a sweep's parent, from the launching process) until end_run."""
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} is still active; call end_run() first.")
        self.client.get_run(run_id)  # fails clearly if it does not exist
        self.run_id = run_id

    def end_run(self, status: str = "FINISHED") -> None:
        """End the active run with ``FINISHED``, ``FAILED`` or ``KILLED``; a no-op with no run."""
        if status not in RUN_STATUSES:
            raise ValueError(f"status {status!r} is not one of {RUN_STATUSES}.")
        if self.run_id is None:
            return
        self._mlflow.set_tracking_uri(self.tracking_uri)
        active = self._mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            self._mlflow.end_run(status=status)
        else:
            self.client.set_terminated(self.run_id, status)
        self.run_id = None

    def __enter__(self) -> MLflowLogger:
        if self.run_id is None:
            self.start_run()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.end_run("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end_run("KILLED")
        else:
            self.end_run("FAILED")

    def _require_run(self) -> str:
        if self.run_id is None:
            raise NoActiveRunError("no active run: call start_run() first, or use the logger as a context "
                                   "manager.")
        return self.run_id

    # ----- params, metrics, tags -----------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Log params in batches; returns the logged strings. The input is never mutated.

        Containers become JSON; secret-looking keys, ``${oc.env:..}`` values and URI passwords are
        redacted; values over MLflow's 6000 chars are kept whole in ``params/long_params.json`` and the
        param says where (MLflow would truncate them silently).
        """
        from mlflow.entities import Param

        run_id = self._require_run()
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping, got {type(params).__name__}.")
        logged: dict[str, str] = {}
        long_values: dict[str, Any] = {}
        for key, value in params.items():
            validate_key(key, "param")
            text = _param_text(redact_value(key, value))
            if len(text) > MAX_PARAM_VALUE_LENGTH:
                long_values[key] = to_jsonable(redact_value(key, value))
                text = f"<{len(text)} chars: see artifact {LONG_PARAMS_ARTIFACT}>"
            logged[key] = text
        items = [Param(k, v) for k, v in logged.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start:start + MAX_PARAMS_PER_BATCH], synchronous=True)
        if long_values:
            self.log_dict(long_values, LONG_PARAMS_ARTIFACT)
        return logged

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics in one batch (NaN kept as NaN, inf mapped to NaN with a warning)."""
        from mlflow.entities import Metric

        run_id = self._require_run()
        timestamp = int(time.time() * 1000)
        items = [Metric(validate_key(k, "metric"), _metric_value(k, v), timestamp, step or 0)
                 for k, v in metrics.items()]
        self._log_metric_batches(run_id, items)

    def log_metric_history(self, history: Mapping[str, list[float]]) -> None:
        """Log per-step series (``{"train_loss": [...], ...}``, step = index) in one batch."""
        from mlflow.entities import Metric

        run_id = self._require_run()
        timestamp = int(time.time() * 1000)
        items = [Metric(validate_key(k, "metric"), _metric_value(k, v), timestamp, step)
                 for k, values in history.items() for step, v in enumerate(values)]
        self._log_metric_batches(run_id, items)

    def _log_metric_batches(self, run_id: str, items: list[Any]) -> None:
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[start:start + MAX_METRICS_PER_BATCH], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        """Set tags in one batch (values redacted, cut to MLflow's tag limit with a marker)."""
        from mlflow.entities import RunTag

        target = run_id or self._require_run()
        items = []
        for key, value in tags.items():
            text = str(redact_value(key, value))
            if len(text) > MAX_TAG_VALUE_LENGTH:
                text = text[: MAX_TAG_VALUE_LENGTH - 20] + "...<truncated>"
            items.append(RunTag(validate_key(key, "tag"), text))
        self.client.log_batch(target, tags=items, synchronous=True)

    # ----- artifacts -----------------------------------------------------------------------------
    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        """Log a JSON (or YAML, by extension) artifact with numpy/pandas/datetime/NaN made standard."""
        run_id = self._require_run()
        plain = to_jsonable(dictionary)
        if artifact_file.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(plain, sort_keys=False)
        else:
            text = json.dumps(plain, indent=2, allow_nan=False)
        self.client.log_text(run_id, text, _artifact_path(artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self._require_run(), text, _artifact_path(artifact_file))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as an image artifact (the caller keeps ownership of the figure)."""
        self.client.log_figure(self._require_run(), figure, _artifact_path(artifact_file))

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self._require_run(), str(local_dir),
                                  _artifact_path(artifact_path) if artifact_path else None)

    def log_backtest_results(self, results: Mapping[str, Any], artifact_path: str = "backtest") -> None:
        """Trades and portfolio values as MLflow tables, everything as ``results.json``, metrics as metrics.

        One artifact upload for the three files and one metrics batch, whatever the number of bars.
        """
        import pandas as pd

        run_id = self._require_run()
        folder = _artifact_path(artifact_path)
        tables = {name: results[name] for name in ("trades", "portfolio_values") if name in results}
        with tempfile.TemporaryDirectory() as tmp:
            for name, table in tables.items():
                frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
                records = to_jsonable(frame.reset_index(drop=True))
                payload = {"columns": [str(c) for c in frame.columns],
                           "data": [[row[str(c)] for c in frame.columns] for row in records]}
                Path(tmp, f"{name}.json").write_text(json.dumps(payload, allow_nan=False))
            rest = {k: v for k, v in results.items() if k not in tables}
            Path(tmp, "results.json").write_text(json.dumps(to_jsonable(rest), indent=2, allow_nan=False))
            self.client.log_artifacts(run_id, tmp, folder)
        # The tag MLflow's UI reads to show these files as tables (what client.log_table would set).
        logged = [{"path": f"{folder}/{name}.json", "type": "table"} for name in tables]
        if logged:
            self.set_tags({"mlflow.loggedArtifacts": json.dumps(logged)})
        if results.get("metrics"):
            self.log_metrics(dict(results["metrics"]))

    def log_model(self, model: Any, artifact_path: str = "model", input_example: Any = None) -> str:
        """Log a torch model in the safe ``pt2`` format; returns ``runs:/<run id>/<artifact_path>``."""
        run_id = self._require_run()
        self._mlflow.set_tracking_uri(self.tracking_uri)
        active = self._mlflow.active_run()
        if active is None or active.info.run_id != run_id:
            raise NoActiveRunError(f"run {run_id} is not MLflow's active run in this process.")
        log_torch_model(model, artifact_path, input_example)
        return f"runs:/{run_id}/{artifact_path}"

    # ----- queries -------------------------------------------------------------------------------
    def get_best_run(self, metric_name: str, mode: str = "max",
                     filter_string: str | None = None) -> dict[str, Any] | None:
        """The finished run with the best finite ``metric_name``, as plain dicts, or None.

        One query with ``max_results=1``; NaN and +/-inf never win (MLflow stores inf as +/-1.8e308, so
        the bounds filter drops it); ties go to the most recently started run (MLflow's secondary order).
        """
        return best_run(self.client, [self.experiment_id], metric_name, mode, filter_string)


@contextlib.contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
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


def _artifact_path(path: str) -> str:
    """Artifact paths from config stay inside the run's artifact root."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"artifact path {path!r} must be a non-empty relative path.")
    normalised = os.path.normpath(path).replace(os.sep, "/")
    if os.path.isabs(path) or normalised == ".." or normalised.startswith("../") or ":" in normalised:
        raise ValueError(f"artifact path {path!r} must stay inside the run's artifact root "
                         "(relative, no '..', no drive or scheme).")
    return normalised


__all__ = ["MLflowLogger", "NoActiveRunError", "REDACTED", "default_tracking_uri", "resolve_tracking_uri"]
