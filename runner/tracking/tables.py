"""The backtest's files as a run logs them: the per-bar and per-trade tables and ``results.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from runner.tracking.params import table_json, to_jsonable

TABLES = ("trades", "portfolio_values")


def write_backtest_files(folder: Path, results: Mapping[str, Any]) -> list[str]:
    """Write the tables (MLflow table JSON) and everything else as ``results.json`` into ``folder``;
    returns the table file names (what MLflow's UI should show as tables)."""
    written = []
    for name in TABLES:
        if name in results:
            table = results[name]
            frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
            (folder / f"{name}.json").write_text(table_json(frame))
            written.append(f"{name}.json")
    rest = {k: v for k, v in results.items() if k not in TABLES}
    (folder / "results.json").write_text(json.dumps(to_jsonable(rest), indent=2, allow_nan=False))
    return written
