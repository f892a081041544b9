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


WIDTH = 100  # the table's default width in characters (--wide: no limit)
CELL = 24  # the widest a text cell is shown before it is cut with an ellipsis (paths: their file name first)


def _text(value: Any, cut: bool = True) -> str:
    """A cell as text: numbers to 4 decimals, missing as ``-`` (never ``None`` or ``nan``); with ``cut``, a long path
    by its file name and any long text cut to ``CELL`` characters."""
    import math

    if value is None or value in ("None", "nan", "") or isinstance(value, float) and not math.isfinite(value):
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    if not cut:
        return text
    if "/" in text and len(text) > CELL:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    return text if len(text) <= CELL else text[:CELL - 1] + "…"


def format_table(rows: list[dict[str, Any]], metric: str, columns: list[str] | None = None,
                 width: int | None = WIDTH) -> tuple[str, list[str]]:
    """The table as text within ``width`` characters (None: every column), and the columns left out to fit.

    Strategy, model and data are already in the run name (``strategy-model-data``): they are their own columns
    only when a run was named otherwise. A column with no value, or the values of a column before it (``data.source``
    beside ``data``), is not shown. A param's header is its last key when that is unique. Columns beyond the width
    are left out from the right, the first four always kept."""
    frame = frame_for(rows, metric, columns)
    if not columns and all(str(r["run_name"]).startswith(f"{r['strategy']}-{r['model']}-{r['data']}") for r in rows):
        frame = frame.drop(columns=["strategy", "model", "data"])
    last = [str(c).rsplit(".", 1)[-1] for c in frame.columns]
    frame.columns = [short if last.count(short) == 1 and short not in HEADERS.values() else column
                     for column, short in zip(frame.columns, last, strict=True)]
    cells: dict[str, list[str]] = {}
    for i, column in enumerate(frame.columns):  # a column with nothing in it, or another's values again, is noise
        values = [_text(v, cut=column != "run name") for v in frame[column]]  # a run's name is shown whole
        if i < 3 or columns or set(values) != {"-"} and values not in cells.values():  # asked for: shown
            cells[column] = values
    sizes = {column: max(len(str(column)), *(len(v) for v in values)) for column, values in cells.items()}
    shown, used, left_out = [], -1, []
    for i, column in enumerate(cells):
        if width is None or i < 4 or used + 1 + sizes[column] <= width:
            shown.append(column)
            used += 1 + sizes[column]
        else:
            left_out.append(str(column))
    lines = [" ".join((str(c).ljust if c == "run name" else str(c).rjust)(sizes[c]) for c in shown)]
    for i in range(len(frame)):
        lines.append(" ".join((cells[c][i].ljust if c == "run name" else cells[c][i].rjust)(sizes[c]) for c in shown))
    return "\n".join(lines), left_out


def to_csv(rows: list[dict[str, Any]], metric: str, columns: list[str] | None = None) -> str:
    return frame_for(rows, metric, columns, full=True).to_csv(index=False)
