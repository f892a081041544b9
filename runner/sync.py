"""``python -m runner.sync PATH [--tracking-uri URI]``: upload a run's (or a whole sweep's) local record to a
tracking server, after the server it was meant for went away.

PATH is a run folder, a sweep folder (its parent and every job) or a ``record`` folder. Each run is created
with the record's params, metrics (with their steps and times), tags, artifacts and model, ended with the
status it had, and tagged ``runner.recovered``. A run that the server already holds complete (it ended
before the server went away) is not duplicated: it is only re-attached to its recovered sweep parent. The
partial run left on the server is ended KILLED and tagged ``runner.superseded_by``. A record that was
uploaded once is refused, before anything is sent. Exit 2 with one line for every user error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import NotFoundError, UserError
from runner.tracking.local_record import RECORD_DIR, RunRecord
from runner.tracking.sanitize import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, REDACTED

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from runner.tracking.logger import MLflowLogger

SYNCED = "synced.json"


def find_records(path: Path) -> list[RunRecord]:
    """The records under ``path``, a sweep's parent first."""
    candidates = [path] if path.name == RECORD_DIR else [path / RECORD_DIR, *sorted(path.glob(f"*/{RECORD_DIR}"))]
    records = [RunRecord(c) for c in candidates if (c / "run.json").is_file()]
    if not records:
        raise NotFoundError(f"{path}: no run record here (a run folder holds {RECORD_DIR}/run.json); give the folder "
                          "that the failed run or sweep printed.")
    return sorted(records, key=lambda r: r.run.get("parent_record") is not None)


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _complete_on_server(client: MlflowClient, record: RunRecord) -> Any:
    """The original run, if the server holds it ended with the record's own final status."""
    from mlflow.exceptions import MlflowException

    if not record.run.get("run_id"):  # started while the server was already gone
        return None
    try:
        original = client.get_run(record.run["run_id"])
    except MlflowException:
        return None
    return original if original.info.status == record.run["status"] != "RUNNING" else None


def _upload_model(client: MlflowClient, record: RunRecord, run_id: str, source_uri: str) -> None:
    name = record.run.get("model")
    if not name:
        return
    if (record.folder / "model").is_dir():
        client.log_artifacts(run_id, str(record.folder / "model"), name)
        return
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory() as tmp:  # logged before the server went away: copy it over
        local = download_artifacts(f"runs:/{record.run['run_id']}/{name}", dst_path=tmp, tracking_uri=source_uri)
        client.log_artifacts(run_id, local, name)


def upload(record: RunRecord, logger: MLflowLogger, parents: dict[str, str]) -> str:
    """Create (or re-attach) the record's run; returns its run id on the target store."""
    from mlflow.entities import Metric, Param, RunTag

    run = record.run
    client = logger.client
    parent_id = parents.get(str(run.get("parent_record")), run.get("parent_run_id"))
    complete = _complete_on_server(client, record)
    if complete is not None:
        if parent_id and complete.data.tags.get("mlflow.parentRunId") != parent_id:
            client.set_tag(complete.info.run_id, "mlflow.parentRunId", parent_id)
        return complete.info.run_id
    tags = {k: v for k, v in record.tags().items()
            if k not in ("mlflow.parentRunId", "sweep_id", "mlflow.runName")}
    tags.update({"runner.recovered": "true", "runner.recovered_from": str(run.get("run_id"))})
    if parent_id:
        tags.update({"mlflow.parentRunId": parent_id, "sweep_id": parent_id})
    created = client.create_run(logger.experiment_id, start_time=run.get("start_time"), run_name=run.get("run_name"))
    new_id = created.info.run_id
    if tags.get("runner.role") == "sweep_parent":
        tags["sweep_id"] = new_id
    for batch in _batches([Param(k, v) for k, v in record.params().items()], MAX_PARAMS_PER_BATCH):
        client.log_batch(new_id, params=batch)
    metrics = [Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"])) for m in record.metrics()]
    for batch in _batches(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(new_id, metrics=batch)
    for batch in _batches([RunTag(k, str(v)) for k, v in tags.items()], MAX_PARAMS_PER_BATCH):
        client.log_batch(new_id, tags=batch)
    inputs = record.inputs()
    if inputs:
        from runner.tracking.lineage import from_record

        client.log_inputs(new_id, datasets=[from_record(item) for item in inputs.values()])
    if (record.folder / "artifacts").is_dir():
        client.log_artifacts(new_id, str(record.folder / "artifacts"))
    source = logger.tracking_uri if REDACTED in run["tracking_uri"] else run["tracking_uri"]
    _upload_model(client, record, new_id, source)
    status = run["status"] if run["status"] != "RUNNING" else "KILLED"  # a record cut off by a hard kill
    client.set_terminated(new_id, status, end_time=run.get("end_time"))
    original_id = run.get("run_id") or _orphan(client, logger.experiment_id, record)
    if original_id:
        _supersede(client, original_id, new_id)
    return new_id


def _orphan(client: MlflowClient, experiment_id: str, record: RunRecord) -> str | None:
    """The run the server created for a record that never learnt its id (the server went away before it
    answered): RUNNING, same name, started by the same process on the same host."""
    tags = record.tags()
    if not tags.get("runner.pid") or not tags.get("runner.host"):
        return None
    runs = client.search_runs([experiment_id], max_results=2, filter_string=(
        f"attributes.status = 'RUNNING' and attributes.run_name = '{record.run.get('run_name')}' and "
        f"tags.`runner.pid` = '{tags['runner.pid']}' and tags.`runner.host` = '{tags['runner.host']}'"))
    return runs[0].info.run_id if len(runs) == 1 else None


def _supersede(client: MlflowClient, original_id: str, new_id: str) -> None:
    """The partial original, if the target store has it: ended KILLED, pointing at its recovered copy."""
    from mlflow.exceptions import MlflowException

    try:
        original = client.get_run(original_id)
    except MlflowException:
        return
    client.set_tag(original_id, "runner.superseded_by", new_id)
    if original.info.status == "RUNNING":
        client.set_terminated(original_id, "KILLED")


def sync(path: Path, tracking_uri: str | None) -> list[tuple[RunRecord, str]]:
    records = find_records(path)
    done = [r for r in records if (r.folder / SYNCED).is_file()]
    if done:
        previous = json.loads((done[0].folder / SYNCED).read_text())
        raise NotFoundError(f"{done[0].folder} was already uploaded (run {previous['run_id']} on "
                          f"{previous['tracking_uri']}); nothing was sent again.")
    from runner.tracking.logger import MLflowLogger

    parents: dict[str, str] = {}
    loggers: dict[tuple[str, str], Any] = {}
    uploaded = []
    for record in records:
        uri = tracking_uri or record.run["tracking_uri"]
        if REDACTED in uri:
            uri = os.environ.get("MLFLOW_TRACKING_URI") or ""
            if not uri:
                raise NotFoundError(f"{record.folder}: the recorded tracking URI had credentials, which are not "
                                  "stored; give it with --tracking-uri or MLFLOW_TRACKING_URI.")
        key = (record.run["experiment_name"], uri)
        if key not in loggers:  # one client per experiment and store, not one per run of a sweep
            loggers[key] = MLflowLogger(*key)
        run_id = upload(record, loggers[key], parents)
        parents[str(record.folder)] = run_id
        (record.folder / SYNCED).write_text(json.dumps({"run_id": run_id, "tracking_uri": uri}))
        uploaded.append((record, run_id))
    return uploaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="the run or sweep folder the failed command printed")
    parser.add_argument("--tracking-uri", help="default: the URI the run was logging to")
    args = parser.parse_args(argv)
    try:
        uploaded = sync(args.path.resolve(), args.tracking_uri)
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    for record, run_id in uploaded:
        print(f"{record.run.get('run_name')}: {record.run['status']} -> run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
