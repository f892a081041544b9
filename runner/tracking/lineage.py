"""A run's bars as MLflow datasets (``log_inputs``, the UI's Dataset column): the data option's name, its source
(the file, the bundled series, or the generator and its parameters), a digest of the bars themselves, and one
context per stretch the run used: ``bars`` (all of them, the ``data_digest`` tag's digest), then ``train``,
``validation`` and ``test``, each walk-forward fold's ``fold K train`` and ``fold K test`` (and ``final_test``), or
each CPCV group's ``group K``. The same bars give the same digests, however they were loaded."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput

    from runner.evaluation.outcome import Prepared

CONTEXT_TAG = "mlflow.data.context"  # the input tag MLflow's UI shows as a dataset's context
FILE_KEYS = ("path",)  # a source key naming a file or folder: logged as an absolute path


def stretches(prepared: Prepared) -> dict[str, tuple[int, int]]:
    """Context -> the half-open bar range ``[start, stop)`` the run used it for."""
    n = len(prepared.book.index)
    found = {"bars": (0, n)}
    if prepared.cpcv is not None:
        found.update({f"group {k}": (int(a), int(b)) for k, (a, b) in enumerate(prepared.cpcv.groups)})
    elif prepared.folds:
        for fold in prepared.folds:
            found[f"fold {fold.number} train"] = (fold.train_start, fold.train_end)
            found[f"fold {fold.number} test"] = (fold.test_start, fold.test_end)
        if prepared.final_fold is not None:
            found["final_test"] = (prepared.final_fold.test_start, prepared.final_fold.test_end)
    else:
        found.update({"train": (0, prepared.train_end), "validation": (prepared.train_end, prepared.val_end),
                      "test": (prepared.val_end, n)})
    return {context: bounds for context, bounds in found.items() if bounds[1] > bounds[0]}


def source_of(data: Mapping[str, Any]) -> tuple[str, str]:
    """``(source_type, source)`` as MLflow's dataset sources write them: a file is ``local`` with its URI; anything
    else (a bundled series, a generator) is ``code`` with the source's class and keys as tags."""
    from runner.tracking.sanitize import redact_value

    keys = {str(k): redact_value(str(k), v) for k, v in data.items() if v is not None}
    for key in FILE_KEYS:
        if keys.get(key):
            return "local", json.dumps({"uri": Path(str(keys[key])).expanduser().absolute().as_uri()})
    return "code", json.dumps({"tags": {k: str(v) for k, v in sorted(keys.items())}}, sort_keys=True)


def data_inputs(prepared: Prepared) -> list[DatasetInput]:
    """The run's datasets, one per stretch (``stretches``), each with its bars' digest and a profile (bars, first
    and last timestamp, assets)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    book = prepared.book
    source_type, source = source_of(prepared.config.data)
    schema = json.dumps({"mlflow_colspec": [{"type": "datetime", "name": "timestamp"}] + [
        {"type": "double", "name": column} for column in sorted({str(c) for f in book.frames.values()
                                                                 for c in f.columns})]})
    inputs = []
    for context, (start, stop) in stretches(prepared).items():
        profile = {"num_bars": stop - start, "first": str(book.index[start]), "last": str(book.index[stop - 1]),
                   "assets": book.n_assets}
        dataset = Dataset(name=prepared.data_name, digest=book.digest(start, stop), source_type=source_type,
                          source=source, schema=schema, profile=json.dumps(profile))
        inputs.append(DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, context)]))
    return inputs


def context_of(item: DatasetInput) -> str:
    """The input's context (``train``, ``fold 2 test``, ...), else its dataset's digest."""
    return next((tag.value for tag in item.tags if tag.key == CONTEXT_TAG), item.dataset.digest)


def input_record(item: DatasetInput) -> dict[str, Any]:
    """A dataset input as plain JSON (a run's local record keeps its inputs so)."""
    dataset = item.dataset
    return {"name": dataset.name, "digest": dataset.digest, "source_type": dataset.source_type,
            "source": dataset.source, "schema": dataset.schema, "profile": dataset.profile,
            "tags": {tag.key: tag.value for tag in item.tags}}


def from_record(record: Mapping[str, Any]) -> DatasetInput:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(record["name"], record["digest"], record["source_type"], record["source"], record.get("schema"),
                      record.get("profile"))
    return DatasetInput(dataset, tags=[InputTag(k, v) for k, v in record.get("tags", {}).items()])
