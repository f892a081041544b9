"""What ``runner.report`` shows for the ranked runs: the rows (JSON), the compact table and CSV.

The table keeps to what decides between runs: rank, run name, the ranking metric, val/test Sharpe, the
test return and drawdown, the top run's deflated Sharpe, strategy, model and data, and only the params
that differ among the rows (never ``_target_`` paths; a key that applies to one data source, such as
``data.n_bars`` for ``data=synthetic``, is left blank on runs of another). ``--columns`` replaces the
default metric columns with any metrics, params or tags.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Run

SHOWN_METRICS = ("sharpe_ratio", "total_return", "max_drawdown")
DEFAULT_COLUMNS = ("val_sharpe_ratio", "test_sharpe_ratio", "test_total_return", "test_max_drawdown")
HEADERS = {"val_sharpe_ratio": "val sharpe", "test_sharpe_ratio": "test sharpe", "test_total_return": "test return",
           "test_max_drawdown": "test max dd", "deflated_sharpe_ratio": "dsr", "run_name": "run name"}
MAX_PARAMS = 6


@functools.lru_cache(maxsize=1)
def _data_specific() -> dict[str, set[str]]:
    """``data.*`` keys that only some data options have (``data.n_bars``: the synthetic ones), with those options."""
    from runner.config.docs import group_params

    options: dict[str, set[str]] = {}
    for option, params in group_params("data").items():
        for param in params:
            options.setdefault(param.key, set()).add(option)
    every = set(group_params("data"))
    return {key: found for key, found in options.items() if found != every}


def applies(key: str, run: Run) -> bool:
    sources = _data_specific().get(key)
    return sources is None or run.data.tags.get("data") in sources


def shown_params(runs: list[Run]) -> list[str]:
    """Params whose values differ among the runs where they apply (no class paths: strategy/model name them)."""
    from runner.tracking.queries import differing_params

    keys = [k for k in differing_params(runs) if not k.rsplit(".", 1)[-1].startswith("_")]
    varied = [k for k in keys if len({r.data.params.get(k) for r in runs if applies(k, r)}) > 1]
    return varied[:MAX_PARAMS]


def rows_for(runs: list[Run], metric: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per run: ids, the ranking metric, val/test metrics, strategy/model/data, differing params, and
    the ``columns`` asked for (a metric, else a param, else a tag)."""
    keys = shown_params(runs) if len(runs) > 1 else []
    suffix = metric.split("_", 1)[1] if metric.startswith(("train_", "val_", "test_", "oos_")) else None
    rows = []
    for rank, run in enumerate(runs, 1):
        metrics, tags = run.data.metrics, run.data.tags
        row = {"rank": rank, "run_id": run.info.run_id, "run_name": run.info.run_name, metric: metrics.get(metric),
               "strategy": tags.get("strategy"), "model": tags.get("model"), "data": tags.get("data"),
               "params": {k: run.data.params.get(k) if applies(k, run) else None for k in keys}}
        for segment in ("val", "test"):
            for name in ({suffix} if suffix else set()) | set(SHOWN_METRICS):
                row[f"{segment}_{name}"] = metrics.get(f"{segment}_{name}")
        for column in columns or []:
            row.setdefault("columns", {})[column] = metrics.get(column, run.data.params.get(column, tags.get(column)))
        rows.append(row)
    return rows


def frame_for(rows: list[dict[str, Any]], metric: str, columns: list[str] | None = None, full: bool = False) -> Any:
    """The table as a DataFrame: the compact default, or ``columns``; ``full`` adds the run id (CSV)."""
    import pandas as pd

    numbers = [metric] + [c for c in DEFAULT_COLUMNS if c != metric] + ["deflated_sharpe_ratio"]
    records = []
    for row in rows:
        record = {"#": row["rank"], "run_name": row["run_name"]}
        if full:
            record["run_id"] = row["run_id"]
        if columns:
            record.update(row.get("columns", {}))
        else:
            record.update({c: row.get(c) for c in numbers})
            record.update({k: row[k] for k in ("strategy", "model", "data")})
            record.update({k: "" if v is None else v for k, v in row["params"].items()})
        records.append(record)
    frame = pd.DataFrame(records)
    if not columns:
        frame[numbers] = frame[numbers].astype(float)
    return frame.rename(columns=HEADERS | {metric: metric} if not full else {})


def format_table(rows: list[dict[str, Any]], metric: str, columns: list[str] | None = None) -> str:
    frame = frame_for(rows, metric, columns)
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="nan")


def to_csv(rows: list[dict[str, Any]], metric: str, columns: list[str] | None = None) -> str:
    return frame_for(rows, metric, columns, full=True).to_csv(index=False)
