"""What the trials statistics (the ledger, deflated Sharpe at N and N_eff, PBO, SPA and the Reality Check, the test
interval) add to the end of a sweep.

    python bench/trials.py [--jobs 20]

Runs one ``model=none`` sweep of --jobs jobs through the CLI in a temp store, then times, in this process and
side by side, reading the sweep name's ledger and ``runner.sweeps.trials.trials_statistics`` on it (best of 5).
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
    from runner.sweeps.ledger import sweep_ledger
    from runner.sweeps.trials import trials_statistics
    from runner.tracking.logger import MLflowLogger
    from runner.tracking.queries import search_ranked

    logger = MLflowLogger("trading_experiment", uri)

    def ledger() -> tuple:
        found = sweep_ledger(logger.client, logger.experiment_id, "bench")
        return found, found.members()

    found, members = ledger()
    winner = search_ranked(logger.client, [logger.experiment_id], "val_sharpe_ratio", "max")[0].info.run_id
    base = best_of(ledger)
    stats = best_of(lambda: trials_statistics("val_sharpe_ratio", found, members, winner))
    print(f"{args.jobs} children: the ledger {base:.3f} s; trials statistics {stats:.3f} s (SPA and the Reality "
          "Check: 1000 stationary-bootstrap draws each, plus the interval's 1000)")


if __name__ == "__main__":
    main()
