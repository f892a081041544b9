"""``MLflowLogger``: a run-scoped MLflow client with batched, validated writes (the documented seed API).

Tables are Parquet (the full record) plus ``.json`` views (MLflow 3 rejects ``.csv`` tables);
``get_best_run`` returns plain dicts from bounded queries, ``log_params`` never mutates its input, and
``log_backtest_results`` logs ``results["metrics"]`` as MLflow metrics so runs can be ranked.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.engine import ENGINE_VERSION
from runner.errors import ConfigError, ConfigTypeError, NotFoundError
from runner.tracking.model_io import log_torch_model
from runner.tracking.queries import ENGINE_VERSION_TAG, best_run
from runner.tracking.sanitize import (
    LONG_PARAMS_ARTIFACT,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE_LENGTH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE_LENGTH,
    RUN_STATUSES,
    metric_value,
    param_text,
    redact_uri,
    redact_value,
    safe_artifact_path,
    to_jsonable,
    validate_key,
)
from runner.tracking.store import (
    EXPERIMENT_TAGS,
    artifact_root_for,
    resolve_tracking_uri,
    sqlite_path,
    store_lock,
    when_unlocked,
)
from runner.tracking.tables import views_tag, write_backtest_files
from runner.tracking.writer import link_inputs, write_deferred

if TYPE_CHECKING:
    import torch
    from mlflow.entities import DatasetInput, Run

    from runner.tracking.writer import RunWriter


class NoActiveRunError(LookupError):
    """Raised when logging is attempted with no run started (MLflow would silently start one)."""


class MLflowLogger:
    """A run-scoped MLflow client: one experiment, one active run, batched writes."""

    def __init__(self, experiment_name: str, tracking_uri: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        if not isinstance(experiment_name, str) or not experiment_name.strip():
            raise ConfigError(f"experiment_name must be a non-empty string, got {experiment_name!r}.")
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        db_path = sqlite_path(self.tracking_uri)
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        self._mlflow = mlflow
        self.experiment_name = experiment_name
        with store_lock(self.tracking_uri):
            self.client = MlflowClient(self.tracking_uri)  # creates (or migrates) the store's schema
            self.experiment_id = self._get_or_create_experiment(experiment_name)
        self.run_id: str | None = None
        self.defer_writes = False  # True: each run's writes go to the store in one batch and one upload at its end
        self.metric_keys: set[str] = set()  # the metric keys logged by this logger to its active or attached run
        self._pending: dict[str, Any] | None = None
        self._tags_held: dict[str, str] = {}  # the active run's tags as this logger set them
        self.writer: RunWriter | None = None  # with defer_writes: a process that writes and ends each run

    @classmethod
    def open_existing(cls, experiment_name: str, tracking_uri: str | None = None) -> MLflowLogger:
        """A logger on an experiment that must already exist (reports never create stores or experiments)."""
        from mlflow import MlflowClient

        uri = resolve_tracking_uri(tracking_uri)
        db_path = sqlite_path(uri)
        if db_path is not None and not db_path.is_file():
            raise NotFoundError(f"no MLflow store at {uri}: run an experiment first, or pass --tracking-uri.")
        with store_lock(uri):  # a run may be creating this store's schema now: wait for it, never race it
            client = MlflowClient(uri)
            experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            names = [e.name for e in client.search_experiments(max_results=20)]
            raise NotFoundError(f"no experiment named {experiment_name!r} in {redact_uri(uri)}; experiments: "
                              f"{', '.join(names)}.")
        return cls(experiment_name, uri)

    def _get_or_create_experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_root_for(self.tracking_uri),
                                                 tags=EXPERIMENT_TAGS)
        except MlflowException:  # created concurrently by another process: fetch it
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def start_run(self, run_name: str | None = None, tags: Mapping[str, str] | None = None,
                  parent_run_id: str | None = None) -> Run:
        """Start a run (default name ``run_YYYYmmdd_HHMMSS``), tagged with the engine version, and make it
        MLflow's active run."""
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} is still active; call end_run() first.")
        run_tags = {ENGINE_VERSION_TAG: str(ENGINE_VERSION)}
        run_tags.update({str(k): str(redact_value(k, v))[:MAX_TAG_VALUE_LENGTH] for k, v in (tags or {}).items()})
        if parent_run_id:
            run_tags["mlflow.parentRunId"] = parent_run_id
        run_name = run_name or datetime.now().strftime("run_%Y%m%d_%H%M%S")
        self._mlflow.set_tracking_uri(self.tracking_uri)
        if self.writer is not None and self.defer_writes:  # not MLflow's active run: another process ends it
            from mlflow.tracking.context.registry import resolve_tags  # the tags MLflow's start_run adds

            run = when_unlocked(self.client.create_run, self.experiment_id, run_name=run_name,
                                tags=resolve_tags({**run_tags, "mlflow.runName": run_name}))
        else:
            run = when_unlocked(self._mlflow.start_run, experiment_id=self.experiment_id, tags=run_tags,
                                run_name=run_name)
        self.run_id = run.info.run_id
        self.metric_keys = set()
        self._tags_held = run_tags
        if self.defer_writes:
            self._pending = {"params": {}, "tags": {}, "metrics": [], "inputs": [],
                             "files": tempfile.mkdtemp(prefix="runner_run_")}
        return run

    def attach(self, run_id: str) -> None:
        """Log into an existing run (e.g. a sweep's parent, from the launching process) until end_run."""
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} is still active; call end_run() first.")
        self.client.get_run(run_id)  # fails clearly if it does not exist
        self.run_id = run_id
        self.metric_keys = set()
        self._tags_held = {}

    def detach(self) -> None:
        """Stop logging into an ``attach``ed run, leaving its status as it is."""
        self.run_id = None

    def end_run(self, status: str = "FINISHED") -> None:
        """End the active run with ``FINISHED``, ``FAILED`` or ``KILLED``; a no-op with no run."""
        if status not in RUN_STATUSES:
            raise ConfigError(f"status {status!r} is not one of {RUN_STATUSES}.")
        if self.run_id is None:
            return
        try:
            self._send_end(self.run_id, status)
        finally:  # ended in the store even when its writes failed: the next run can start
            self.run_id = None

    def __enter__(self) -> MLflowLogger:
        if self.run_id is None:
            self.start_run()
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        stopped = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.end_run("FINISHED" if exc_type is None else "KILLED" if stopped else "FAILED")

    def _require_run(self) -> str:
        if self.run_id is None:
            raise NoActiveRunError("no active run: call start_run() first, or use the logger as a context manager.")
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> dict[str, str]:
        """Log params in batches; returns the logged strings. The input is never mutated.

        Containers become JSON; secret-looking keys, ``${oc.env:..}`` values and URI passwords are
        redacted; values over MLflow's 6000 chars are kept whole in ``params/long_params.json`` and the
        param says where (MLflow would truncate them silently).
        """
        from mlflow.entities import Param

        run_id = self._require_run()
        if not isinstance(params, Mapping):
            raise ConfigTypeError(f"params must be a mapping, got {type(params).__name__}.")
        logged: dict[str, str] = {}
        long_values: dict[str, Any] = {}
        for key, value in params.items():
            validate_key(key, "param")
            text = param_text(redact_value(key, value))
            if len(text) > MAX_PARAM_VALUE_LENGTH:
                long_values[key] = to_jsonable(redact_value(key, value))
                text = f"<{len(text)} chars: see artifact {LONG_PARAMS_ARTIFACT}>"
            logged[key] = text
        items = [Param(k, v) for k, v in logged.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._send_batch(run_id, params=items[start:start + MAX_PARAMS_PER_BATCH])
        if long_values:
            self.log_dict(long_values, LONG_PARAMS_ARTIFACT)
        return logged

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics in one batch (NaN kept as NaN, inf mapped to NaN with a warning)."""
        from mlflow.entities import Metric

        run_id = self._require_run()
        timestamp = int(time.time() * 1000)
        items = [Metric(validate_key(k, "metric"), metric_value(k, v), timestamp, step or 0)
                 for k, v in metrics.items()]
        self._log_metric_batches(run_id, items)

    def log_metric_history(self, history: Mapping[str, list[float]]) -> None:
        """Log per-step series (``{"train_loss": [...], ...}``, step = index) in one batch."""
        from mlflow.entities import Metric

        run_id = self._require_run()
        timestamp = int(time.time() * 1000)
        items = [Metric(validate_key(k, "metric"), metric_value(k, v), timestamp, step)
                 for k, values in history.items() for step, v in enumerate(values)]
        self._log_metric_batches(run_id, items)

    def _log_metric_batches(self, run_id: str, items: list[Any]) -> None:
        self.metric_keys.update(item.key for item in items)
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self._send_batch(run_id, metrics=items[start:start + MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, Any], run_id: str | None = None) -> None:
        """Set tags in one batch (values redacted, cut to MLflow's tag limit with a marker); a tag this logger gave
        the active run already, with the same value, is not sent again (a run started with its data digest)."""
        from mlflow.entities import RunTag

        target = run_id or self._require_run()
        held = self._tags_held if target == self.run_id else {}
        items = []
        for key, value in tags.items():
            text = str(redact_value(key, value))
            if len(text) > MAX_TAG_VALUE_LENGTH:
                text = text[: MAX_TAG_VALUE_LENGTH - 20] + "...<truncated>"
            if held.get(validate_key(key, "tag")) != text:
                items.append(RunTag(key, text))
        if items:
            self._send_batch(target, tags=items)
            held.update((item.key, item.value) for item in items)

    def log_dict(self, dictionary: Any, artifact_file: str) -> None:
        """Log a JSON (or YAML, by extension) artifact with numpy/pandas/datetime/NaN made standard."""
        self._require_run()
        plain = to_jsonable(dictionary)
        if artifact_file.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(plain, sort_keys=False)
        else:
            text = json.dumps(plain, indent=2, allow_nan=False)
        self.log_text(text, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_file(artifact_file, lambda path: path.write_text(text))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as an image artifact (the caller keeps ownership of the figure)."""
        self._log_file(artifact_file, figure.savefig)

    def _log_file(self, artifact_file: str, write: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, safe_artifact_path(artifact_file))
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
            self.log_artifacts(tmp)

    def log_inputs(self, inputs: Sequence[DatasetInput]) -> None:
        """The datasets the run read (``mlflow.log_input``'s entities; ``runner.tracking.lineage``)."""
        self._send_inputs(self._require_run(), list(inputs))

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self._send_artifacts(self._require_run(), str(local_dir),
                             safe_artifact_path(artifact_path) if artifact_path else None)

    # ----- what reaches the store: one place, so that a subclass can also keep a local record -----
    def _send_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        if self._pending is not None and run_id == self.run_id:  # defer_writes: kept for the run's end
            self._pending["params"].update((p.key, p) for p in params)
            self._pending["tags"].update((t.key, t) for t in tags)
            self._pending["metrics"].extend(metrics)
            return
        when_unlocked(self.client.log_batch, run_id, metrics=list(metrics), params=list(params), tags=list(tags),
                      synchronous=True)

    def _send_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        if self._pending is not None and run_id == self.run_id:
            self._pending["inputs"].extend(inputs)
            return
        link_inputs(self.client, run_id, inputs)

    def _send_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None) -> None:
        if self._pending is not None and run_id == self.run_id:
            shutil.copytree(local_dir, Path(self._pending["files"], artifact_path or ""), dirs_exist_ok=True)
            return
        self.client.log_artifacts(run_id, local_dir, artifact_path)

    def _send_model(self, model: torch.nn.Module, name: str, input_example: Any) -> None:
        when_unlocked(log_torch_model, model, name, input_example)

    def _send_end(self, run_id: str, status: str) -> None:
        pending = None
        if run_id == self.run_id:
            pending, self._pending = self._pending, None
        if pending is not None and self.writer is not None:  # written and ended by the writer's process
            self.writer.submit(run_id, pending, status)
            return
        try:
            if pending is not None:
                write_deferred(self.client, run_id, pending)
        except BaseException as error:  # not FINISHED without what it computed: a resume would stand on it
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            raise
        finally:  # the run ends even when its deferred writes could not be sent
            self._mlflow.set_tracking_uri(self.tracking_uri)
            active = self._mlflow.active_run()
            if active is not None and active.info.run_id == run_id:
                when_unlocked(self._mlflow.end_run, status=status)
            else:
                when_unlocked(self.client.set_terminated, run_id, status)

    def log_backtest_results(self, results: Mapping[str, Any], artifact_path: str = "backtest",
                             tables: str = "auto", log_metrics: bool = True) -> None:
        """The tables (trades, fills, portfolio values), everything else as ``results.json``, metrics as metrics.

        ``tables``: ``auto`` (Parquet full record + a JSON table view of at most 8,000 rows, thinned when
        larger), ``parquet`` (Parquet only) or ``json`` (full JSON tables only); see ``runner.tracking.tables``.
        One artifact upload and one metrics batch, whatever the number of bars (``log_metrics=False``: no metrics,
        for the files of a run whose metrics are logged already).
        """
        self._require_run()
        folder = safe_artifact_path(artifact_path)
        with tempfile.TemporaryDirectory() as tmp:
            shown = write_backtest_files(Path(tmp), results, tables, folder)
            self.log_artifacts(tmp, folder)
        if shown:
            self.set_tags(views_tag(shown, folder))
        if results.get("metrics") and log_metrics:
            self.log_metrics(dict(results["metrics"]))

    def log_model(self, model: torch.nn.Module, artifact_path: str = "model", input_example: Any = None) -> str:
        """Log a torch model in the safe ``pt2`` format; returns ``runs:/<run id>/<artifact_path>``."""
        run_id = self._require_run()
        self._mlflow.set_tracking_uri(self.tracking_uri)
        active = self._mlflow.active_run()
        if active is None or active.info.run_id != run_id:
            raise NoActiveRunError(f"run {run_id} is not MLflow's active run in this process.")
        name = safe_artifact_path(artifact_path)
        self._send_model(model, name, input_example)
        return f"runs:/{run_id}/{name}"

    def get_best_run(self, metric_name: str, mode: str = "max", filter_string: str | None = None,
                     all_versions: bool = False) -> dict[str, Any] | None:
        """The finished run with the best finite ``metric_name``, as plain dicts, or None.

        Bounded queries; NaN and +/-inf never win (MLflow stores inf as +/-1.8e308, so the bounds filter
        drops it); ties go to the most recently started run (MLflow's secondary order). Only runs of the
        current engine version compete unless ``all_versions=True``; ``older_runs_left_out`` counts those of older
        versions (counted up to ``OLDER_COUNTED`` of ``runner.tracking.queries``: that count means that many or
        more; runs of a newer version are left out and not counted).
        """
        return best_run(self.client, [self.experiment_id], metric_name, mode, filter_string, all_versions)
