"""A sweep's progress: how many jobs it will run (from the overrides), how many are done and about how long
is left; the count lives in a locked file in the sweep folder, so jobs in other processes (joblib) share it."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

PROGRESS_FILE = ".progress.json"


def planned_jobs(task_overrides: list[str], sweeper: Any) -> int | None:
    """The number of jobs: the product of the sweep overrides' lengths for the basic sweeper, ``n_trials`` for
    sweepers that have one (Optuna), else None (unknown)."""
    trials = sweeper.get("n_trials") if hasattr(sweeper, "get") else None
    if trials:
        return int(trials)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(task_overrides))
        return math.prod(len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override())
    except Exception:  # noqa: BLE001 - glob() and other sweeps whose length needs the config: unknown
        return None


def fixed_overrides(task_overrides: list[str]) -> list[str]:
    """The sweep command's overrides that every job shares (the rest are what a job's name shows)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    except Exception:  # noqa: BLE001 - then every override is shown
        return []
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def job_done(sweep_dir: str | Path, total: int | None, started: float) -> str:
    """Count one more finished job; returns ``3/8 jobs done, about 1m20s left`` (or ``3 jobs done``)."""
    from filelock import FileLock

    path = Path(sweep_dir) / PROGRESS_FILE
    with FileLock(str(path) + ".lock"):
        done = (json.loads(path.read_text())["done"] if path.exists() else 0) + 1
        path.write_text(json.dumps({"done": done}))
    if not total:
        return f"{done} job(s) done"
    elapsed = time.time() - started
    left = elapsed / done * max(total - done, 0)
    return f"{done}/{total} jobs done, {_duration(elapsed)} so far" + (f", about {_duration(left)} left"
                                                                       if done < total else "")
