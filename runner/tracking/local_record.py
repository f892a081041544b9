"""A run's local record, and a logger that keeps it: everything a run logs is also written, as it is
produced, to the run's own output folder, so that a tracking server that goes away loses nothing.

Kept for runs that log to a tracking server (a local sqlite store cannot go away). Layout of
``<run folder>/record/`` (replayed by ``python -m runner.sync``):
``run.json`` (experiment, tracking URI, run name and id, parent, status, start and end times),
``params.json``, ``tags.json``, ``metrics.jsonl`` (one ``{key, value, step, timestamp}`` a line), ``inputs.json``
(the dataset inputs by context),
``artifacts/`` (every artifact as logged), ``model/`` (the model, saved here when it could not be logged)
and ``synced.json`` once uploaded.

When the server stops answering (MLflow gives up after its bounded retries, ``store.bounded_http_retries``),
``RecordingLogger`` says so once, stops sending and carries on into the record alone; the run then ends
with a non-zero exit that names the folder and the upload command.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.engine import ENGINE_VERSION
from runner.tracking.logger import MLflowLogger
from runner.tracking.queries import ENGINE_VERSION_TAG
from runner.tracking.sanitize import redact_uri, redact_value

if TYPE_CHECKING:
    import torch
    from mlflow.entities import DatasetInput, Run

RECORD_DIR = "record"
# One per start_run: finds a copy that a retried create-run request made. Not "..._token": a key that looks secret
# has its value redacted, and the copies could never be found by it.
START_ID_TAG = "runner.start_id"
_server_lost: dict[str, str] = {}  # tracking URI -> the error: no later run or job of this process waits on it


def keeps_record(tracking_uri: str) -> bool:
    """Only a remote store can go away mid-run: a local sqlite store gets no second copy of everything."""
    return tracking_uri.startswith(("http://", "https://"))


def run_logger(experiment_name: str, tracking_uri: str, record_dir: Path, parent_record: Path | None = None) -> Any:
    """A ``RecordingLogger`` for a tracking server, a plain ``MLflowLogger`` for a local store."""
    if keeps_record(tracking_uri):
        return RecordingLogger(experiment_name, tracking_uri, record_dir, parent_record)
    return MLflowLogger(experiment_name, tracking_uri)


def is_unreachable(error: BaseException) -> bool:
    """MLflow's error once its HTTP retries are exhausted (refused connections, timeouts, 5xx answers)."""
    text = str(error)
    return text.startswith("API request to") and "failed with" in text


def cut_off(error: BaseException) -> bool:
    """The server went away while it answered (its reply cut short): MLflow's HTTP retries end once a reply has
    begun, so the request was not tried again, and the server may be back within their budget."""
    return is_unreachable(error) and "Connection broken" in str(error)


def server_lost(tracking_uri: str) -> str | None:
    return _server_lost.get(tracking_uri)


def mark_server_lost(tracking_uri: str, error: BaseException) -> None:
    """Remember the loss and make any later MLflow call of this process fail at once (MLflow reads its
    retry settings per request), MLflow's own exit-time ``end_run`` included."""
    if tracking_uri not in _server_lost:
        reason = str(error).split(" failed with ", 1)[-1][:300]
        print(f"error: the tracking server {redact_uri(tracking_uri)} stopped answering ({reason}); carrying on "
              "into the run's local record only", file=sys.stderr)
    _server_lost[tracking_uri] = str(error)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "3"


class RunRecord:
    """The files of one run's record (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _read(self, name: str, default: Any) -> Any:
        path = self.folder / name
        return json.loads(path.read_text()) if path.is_file() else default

    def _write(self, name: str, value: Any) -> None:
        path = self.folder / name
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(value, indent=1, allow_nan=True))
        temporary.replace(path)  # a kill mid-write leaves the previous version, never half a file

    def start(self, **run: Run) -> None:
        """A new record; the tracking URI is kept without credentials (``runner.sync`` asks for it then)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        run["tracking_uri"] = redact_uri(str(run.get("tracking_uri", "")))
        self._write("run.json", {**run, "status": "RUNNING", "start_time": int(time.time() * 1000)})

    @property
    def run(self) -> dict[str, Any]:
        return self._read("run.json", {})

    def update_run(self, **changes: Any) -> None:
        self._write("run.json", {**self.run, **changes})

    def params(self) -> dict[str, str]:
        return self._read("params.json", {})

    def tags(self) -> dict[str, str]:
        return self._read("tags.json", {})

    def inputs(self) -> dict[str, dict[str, Any]]:
        """The run's dataset inputs by context (``runner.tracking.lineage.input_record``)."""
        return self._read("inputs.json", {})

    def add(self, name: str, values: dict[str, Any]) -> None:
        self._write(name, {**self._read(name, {}), **values})

    def add_metrics(self, metrics: list[Any]) -> None:
        with open(self.folder / "metrics.jsonl", "a") as handle:
            for m in metrics:
                handle.write(json.dumps({"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp})
                             + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.folder / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []

    def add_artifacts(self, local_dir: str, artifact_path: str | None) -> None:
        shutil.copytree(local_dir, self.folder / "artifacts" / (artifact_path or ""), dirs_exist_ok=True)

    def finish(self, status: str) -> None:
        if (self.folder / "run.json").is_file():
            self.update_run(status=status, end_time=int(time.time() * 1000))


class RecordingLogger(MLflowLogger):
    """An ``MLflowLogger`` that also keeps the run's record in ``record_dir`` and carries on from it alone
    once the tracking server is lost."""

    def __init__(self, experiment_name: str, tracking_uri: str | None, record_dir: str | Path,
                 parent_record: str | Path | None = None) -> None:
        super().__init__(experiment_name, tracking_uri)
        self.record = RunRecord(record_dir)
        self.parent_record = str(parent_record) if parent_record else None

    @property
    def server_lost(self) -> str | None:
        return server_lost(self.tracking_uri)

    def _forward(self, send: Any, *args: Any, again: bool = True) -> None:
        """``send(*args)``, sent once more (with MLflow's retries again) when the server went away mid-reply and
        ``again``: a batch, inputs and files are safe to send twice (MLflow drops a metric it holds already). Not a
        model (two logged models) nor a run's end (its deferred writes are gone from memory once tried)."""
        if self.server_lost:
            return
        from mlflow.exceptions import MlflowException

        try:
            send(*args)
        except MlflowException as error:
            if not is_unreachable(error):
                raise
            if again and cut_off(error):
                self._forward(send, *args, again=False)
                return
            mark_server_lost(self.tracking_uri, error)

    def start_run(self, run_name: str | None = None, tags: Any = None, parent_run_id: str | None = None) -> Any:
        """Start the run on the server and in the record; with the server lost, in the record alone."""
        from mlflow.exceptions import MlflowException

        name = run_name or datetime.now().strftime("run_%Y%m%d_%H%M%S")
        run = None
        start_id, tries = uuid.uuid4().hex, 2  # a second try when the server went away mid-reply
        while run is None and tries and not self.server_lost:
            tries -= 1
            try:
                run = super().start_run(name, {**(tags or {}), START_ID_TAG: start_id}, parent_run_id)
                self._drop_duplicates(run, start_id)  # the same start id: a copy the cut-off try stored goes too
            except MlflowException as error:
                if not is_unreachable(error):
                    raise
                if not (tries and cut_off(error)):
                    mark_server_lost(self.tracking_uri, error)
        if run is None:
            self.run_id = f"offline-{uuid.uuid4().hex}"
        self.record.start(experiment_name=self.experiment_name, tracking_uri=self.tracking_uri, run_name=name,
                          run_id=run.info.run_id if run else None, parent_run_id=parent_run_id,
                          parent_record=self.parent_record)
        recorded = dict(run.data.tags) if run else {ENGINE_VERSION_TAG: str(ENGINE_VERSION), **{
            str(k): str(redact_value(k, v)) for k, v in (tags or {}).items()}}
        self.record.add("tags.json", recorded)
        self._tags_held = recorded  # what set_tags need not send again (offline too: the record holds them)
        return run

    def _drop_duplicates(self, run: Run, start_id: str) -> None:
        """Creating a run is not idempotent: a server that stored it and then went away before answering gets
        the request again from MLflow's retries and stores a second copy. Every copy carries this start's id;
        all but the one in use are deleted (one search per run, only against a tracking server)."""
        copies = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{START_ID_TAG}` = '{start_id}'")
        for copy in copies:
            if copy.info.run_id != run.info.run_id:
                self.client.delete_run(copy.info.run_id)

    def log_model(self, model: torch.nn.Module, artifact_path: str = "model", input_example: Any = None) -> str:
        if not self.server_lost:
            return super().log_model(model, artifact_path, input_example)
        self._send_model(model, artifact_path, input_example)  # no MLflow run to be active: into the record
        return f"{self.record.folder / 'model'}"

    def _send_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        if run_id == self.run_id:
            if params:
                self.record.add("params.json", {p.key: p.value for p in params})
            if tags:
                self.record.add("tags.json", {t.key: t.value for t in tags})
            if metrics:
                self.record.add_metrics(list(metrics))
        self._forward(super()._send_batch, run_id, metrics, params, tags)

    def _send_inputs(self, run_id: str, inputs: list[DatasetInput]) -> None:
        if run_id == self.run_id:
            from runner.tracking.lineage import context_of, input_record

            self.record.add("inputs.json", {context_of(item): input_record(item) for item in inputs})
        self._forward(super()._send_inputs, run_id, inputs)

    def _send_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None) -> None:
        if run_id == self.run_id:
            self.record.add_artifacts(local_dir, artifact_path)
        self._forward(super()._send_artifacts, run_id, local_dir, artifact_path)

    def _send_model(self, model: torch.nn.Module, name: str, input_example: Any) -> None:
        self._forward(super()._send_model, model, name, input_example, again=False)
        self.record.update_run(model=name)
        if self.server_lost:  # the trained model exists only here: keep it in the record
            from runner.tracking.model_io import save_torch_model

            shutil.rmtree(self.record.folder / "model", ignore_errors=True)
            save_torch_model(model, str(self.record.folder / "model"), input_example)

    def _send_end(self, run_id: str, status: str) -> None:
        if run_id == self.run_id:
            self.record.finish(status)
        if self.server_lost:  # pops MLflow's active run; the call itself fails at once
            from mlflow.exceptions import MlflowException

            try:
                super()._send_end(run_id, status)
            except MlflowException:
                pass
            return
        self._forward(super()._send_end, run_id, status, again=False)
