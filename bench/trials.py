"""What the trials statistics (deflated Sharpe, PBO, median test metrics) add to the end of a sweep.

    python bench/trials.py [--jobs 20]

Runs one ``model=none`` sweep of --jobs jobs through the CLI in a temp store, then times, in this process and
side by side, the sweep's winner summary without and with ``runner.sweeps.trials.trials_statistics`` (best of 5).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def best_of(func, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_trials_")
    uri = f"sqlite:///{work}/mlflow.db"
    lookbacks = ",".join(str(5 + 5 * i) for i in range(args.jobs))
    subprocess.run([sys.executable, "-m", "runner", "-m", "+strategy=momentum", "model=none", "sweep_name=bench",
                    f"strategy.lookback={lookbacks}"], cwd=work, check=True, capture_output=True,
                   env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)})
    sys.path.insert(0, str(ROOT))
    from runner.sweeps.trials import trials_statistics
    from runner.tracking.logger import MLflowLogger
    from runner.tracking.queries import search_ranked, sweep_children, sweep_members

    logger = MLflowLogger("trading_experiment", uri)
    parent = logger.client.search_runs([logger.experiment_id], "tags.`runner.role` = 'sweep_parent'")[0]

    def without() -> tuple:
        children = sweep_children(logger.client, logger.experiment_id, parent.info.run_id)
        members = sweep_members(logger.client, logger.experiment_id, children)
        return children, members

    children, members = without()
    winner = search_ranked(logger.client, [logger.experiment_id], "val_sharpe_ratio", "max")[0].info.run_id
    base = best_of(without)
    stats = best_of(lambda: trials_statistics(logger.client, "val_sharpe_ratio", children, members, winner))
    print(f"{args.jobs} children: children query {base:.3f} s; trials statistics {stats:.3f} s "
          f"(goal <= 0.3 s added to a sweep's end)")


if __name__ == "__main__":
    main()
