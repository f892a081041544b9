"""runner.sync on records built by hand: the cases an outage produces by chance, made deterministic
(the outages themselves are in tests/test_outage.py)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_a_run_record_keeps_no_credentials_and_sync_asks_for_them(tmp_path: Path, cli_env: dict) -> None:
    from runner.tracking.local_record import RunRecord

    record = RunRecord(tmp_path / "run" / "record")
    record.start(experiment_name="e", tracking_uri="https://bob:pw-in-uri@mlflow.example:5000", run_name="r",
                 run_id="abc", parent_run_id=None, parent_record=None)
    assert "pw-in-uri" not in (record.folder / "run.json").read_text()
    env = {k: v for k, v in cli_env.items() if k != "MLFLOW_TRACKING_URI"}
    done = run_cli(["runner.sync", str(tmp_path / "run")], env, tmp_path)
    assert done.returncode == 2 and "give it with --tracking-uri" in done.stderr and "Traceback" not in done.stderr


def test_sync_supersedes_the_run_a_lost_server_created_without_answering(tmp_path: Path, cli_env: dict,
                                                                         tracking_uri: str) -> None:
    """The server committed the run and died before answering: the record has no run id, so the orphan is
    found by name, pid and host, and ended KILLED once its recovered copy exists."""
    from runner.tracking.local_record import RunRecord
    from runner.tracking.logger import MLflowLogger

    logger = MLflowLogger("e", tracking_uri)
    tags = {"runner.pid": "4242", "runner.host": "somehost"}
    orphan = logger.client.create_run(logger.experiment_id, run_name="r1", tags=tags)
    record = RunRecord(tmp_path / "run" / "record")
    record.start(experiment_name="e", tracking_uri=tracking_uri, run_name="r1", run_id=None, parent_run_id=None,
                 parent_record=None)
    record.add("tags.json", tags)
    record.add("params.json", {"p": "1"})
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from runner.tracking.lineage import CONTEXT_TAG, input_record

    bars = DatasetInput(Dataset("csv", "0123456789abcdef", "local", '{"uri": "file:///data/bars.csv"}', None,
                                '{"num_bars": 3}'), tags=[InputTag(CONTEXT_TAG, "bars")])
    record.add("inputs.json", {"bars": input_record(bars)})  # as RecordingLogger keeps a run's dataset inputs
    record.finish("FINISHED")
    done = run_cli(["runner.sync", str(tmp_path / "run")], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    recovered = logger.client.search_runs([logger.experiment_id], "tags.`runner.recovered` = 'true'")[0]
    assert recovered.info.status == "FINISHED" and recovered.data.params == {"p": "1"}
    [declared] = recovered.inputs.dataset_inputs  # the run's bars, declared as the lost run declared them
    assert (declared.dataset.digest, declared.dataset.source, declared.tags[0].value) == (
        "0123456789abcdef", '{"uri": "file:///data/bars.csv"}', "bars")
    original = logger.client.get_run(orphan.info.run_id)
    assert original.info.status == "KILLED" and original.data.tags["runner.superseded_by"] == recovered.info.run_id


def test_a_runs_start_id_is_stored_as_given_so_a_retried_creation_is_found(tmp_path: Path, tracking_uri: str) -> None:
    """A copy that a retried create-run request stored carries the same start id; the id must not be redacted as a
    secret (it was, as ``runner.start_token``), or no copy is ever found and one is left RUNNING."""
    from runner.tracking.local_record import START_ID_TAG, RecordingLogger

    logger = RecordingLogger("e", tracking_uri, tmp_path / "record")
    run = logger.start_run("r")
    start_id = run.data.tags[START_ID_TAG]
    assert len(start_id) == 32 and int(start_id, 16) >= 0  # the uuid itself
    found = logger.client.search_runs([logger.experiment_id], f"tags.`{START_ID_TAG}` = '{start_id}'")
    assert [r.info.run_id for r in found] == [run.info.run_id]
    logger.end_run()
