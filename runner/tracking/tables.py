"""The backtest's tables as a run logs them and reads them back: Parquet for the full record, a JSON view of
at most ``JSON_ROWS`` rows for MLflow's table view, and everything else as ``results.json``.

``tables="auto"`` (the default) writes ``<name>.parquet`` (every row; zstd, byte-stream-split floats,
delta-encoded timestamps) and ``<name>.json`` (every row up to ``JSON_ROWS``, else an even thinning that
keeps the first and last row and both ends of every segment or walk-forward fold). ``"parquet"`` writes only the Parquet
record, ``"json"`` only full JSON tables (the first wave's format, any size). ``results.json`` says, per
table, its rows and which file is the full record.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.errors import ConfigError, NotFoundError
from runner.tracking.sanitize import table_json, to_jsonable
from runner.tracking.store import local_path

TABLES = ("trades", "fills", "portfolio_values", "weights", "walk_forward", "folds", "final_test", "cpcv_paths",
          "cpcv_splits")
TABLE_FORMATS = ("auto", "parquet", "json")
JSON_ROWS = 8000  # a JSON view keeps every row up to this many: 30 years of daily bars
PARQUET_ROW_GROUP = 131_072
VIEWS_TAG = "mlflow.loggedArtifacts"


def thinned_rows(frame: pd.DataFrame, limit: int = JSON_ROWS) -> np.ndarray:
    """Row positions of an even thinning to about ``limit`` rows that keeps the first and last row and, where
    the frame has a ``segment`` (or walk-forward ``fold``) column, the first and last row of every one."""
    n = len(frame)
    if n <= limit:
        return np.arange(n)
    keep = [0, n - 1]
    for column in ("segment", "fold"):
        if column in frame:
            codes = pd.Series(frame[column]).astype("category").cat.codes.to_numpy()
            starts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
            keep += [*starts, *(starts - 1)]
    even = np.linspace(0, n - 1, max(limit - len(keep), 2)).round().astype(np.int64)
    return np.union1d(np.asarray(keep, dtype=np.int64), even)


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Zero-copy into Arrow, written in row groups of ``PARQUET_ROW_GROUP`` rows (bounded buffers); floats
    byte-stream-split and timestamps delta-encoded before zstd (about 0.65x the size of plain zstd)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    times = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=PARQUET_ROW_GROUP,
                   compression="zstd", use_byte_stream_split=floats or False,
                   use_dictionary=[c for c in frame.columns if c not in floats and c not in times],
                   column_encoding={c: "DELTA_BINARY_PACKED" for c in times} or None)


def write_backtest_files(folder: Path, results: Mapping[str, Any], tables: str = "auto",
                         artifact_path: str = "backtest") -> list[str]:
    """Write the tables and ``results.json`` into ``folder``; returns the JSON table file names (what
    MLflow's UI should show as tables)."""
    if tables not in TABLE_FORMATS:
        raise ConfigError(f"tables={tables!r} is not valid; allowed: {', '.join(TABLE_FORMATS)}.")
    shown, described = [], {}
    for name in (n for n in TABLES if n in results):
        table = results[name]
        frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
        about: dict[str, Any] = {"rows": len(frame)}
        if tables != "json":
            write_parquet(frame, folder / f"{name}.parquet")
            about["full_record"] = f"{artifact_path}/{name}.parquet"
        if tables != "parquet":
            rows = np.arange(len(frame)) if tables == "json" else thinned_rows(frame)
            (folder / f"{name}.json").write_text(table_json(frame.iloc[rows] if len(rows) < len(frame) else frame))
            about.update({"json_view": f"{artifact_path}/{name}.json", "json_rows": len(rows)})
            about.setdefault("full_record", about["json_view"])
            shown.append(f"{name}.json")
        described[name] = about
    rest = {k: v for k, v in results.items() if k not in TABLES}
    rest["tables"] = described
    (folder / "results.json").write_text(json.dumps(to_jsonable(rest), indent=2, allow_nan=False))
    return shown


def views_tag(shown: list[str], artifact_path: str = "backtest") -> dict[str, str]:
    """The tag MLflow's UI reads to show these JSON files as tables (what ``client.log_table`` sets); none for
    none."""
    return {VIEWS_TAG: json.dumps([{"path": f"{artifact_path}/{name}", "type": "table"} for name in shown])
            } if shown else {}


def read_backtest_table(artifact_uri: str, name: str, artifact_path: str = "backtest",
                        columns: list[str] | None = None) -> pd.DataFrame:
    """A run's full table ``name`` from its artifact location (only ``columns``, when given): the Parquet record, or
    for runs logged before it existed (or with ``tables="json"``) the JSON table. Local stores are read in place."""
    for suffix in ("parquet", "json"):
        frame = _read_artifact(f"{artifact_uri}/{artifact_path}/{name}.{suffix}", suffix, columns)
        if frame is not None:
            return frame
    raise NotFoundError(f"no {artifact_path}/{name}.parquet or .json under {artifact_uri}")


def logged_results(artifact_uri: str, artifact_path: str = "backtest") -> dict[str, Any]:
    """What ``write_backtest_files`` wrote for a run, read back: ``results.json``'s entries and every table it
    lists, in full (``write_backtest_files`` again writes the same record, with any format)."""
    results = _read_artifact(f"{artifact_uri}/{artifact_path}/results.json", "results")
    if results is None:
        raise NotFoundError(f"no {artifact_path}/results.json under {artifact_uri}")
    tables = results.pop("tables", {})
    return {**results, **{name: read_backtest_table(artifact_uri, name, artifact_path) for name in tables}}


def _read_artifact(uri: str, kind: str, columns: list[str] | None = None) -> Any:
    """The Parquet table, JSON table (``kind`` "parquet", "json"; only ``columns``, when given) or ``results.json``
    dict at ``uri``; None when there is none."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    local = local_path(uri)
    with tempfile.TemporaryDirectory() as tmp:
        if local is None:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per table is noise
            try:
                local = Path(download_artifacts(uri, dst_path=tmp))
            except (MlflowException, OSError):
                return None
        if not local.is_file():
            return None
        if kind == "parquet":
            return pd.read_parquet(local, columns=columns)
        payload = json.loads(local.read_text())
        if kind == "results":
            return payload
        frame = pd.DataFrame(payload["data"], columns=payload["columns"])
        return frame if columns is None else frame[columns]
