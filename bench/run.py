"""One run's cost: cold wall time of the main command vs the bare heavy imports, and where the time goes.

    python bench/run.py [--repeat 2]

Runs in a temp dir with its own sqlite store; prints wall times and the runner's own time split.
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


def timed(args: list[str], cwd: str, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench_run_")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONPATH": str(ROOT)}
    py = sys.executable
    rows = [("python -m runner --help", [py, "-m", "runner", "--help"]),
            ("import mlflow, torch, pandas, matplotlib",
             [py, "-c", "import mlflow, torch, pandas, matplotlib.pyplot"]),
            ("+strategy=momentum model=none", [py, "-m", "runner", "+strategy=momentum", "model=none"]),
            ("+strategy=momentum (mlp)", [py, "-m", "runner", "+strategy=momentum"])]
    print(f"{'command':<42} {'best wall s':>11}")
    for label, command in rows:
        best = float("inf")
        for _ in range(args.repeat):
            elapsed, _ = timed(command, work, env)
            best = min(best, elapsed)
        print(f"{label:<42} {best:>11.2f}")


if __name__ == "__main__":
    main()
