"""Sweep cost per job: basic launcher vs joblib (n_jobs=2), model=none and model=mlp, vs a single run.

    python bench/sweep.py [--jobs 20] [--models none mlp]

"joblib" is hydra-joblib-launcher with 2 workers (Hydra's own plugin). Speed-ups are basic total / joblib
total, measured in the same run.
Each sweep varies strategy.lookback over --jobs values with resume=false, in its own temp store.
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


def run(args: list[str]) -> float:
    work = tempfile.mkdtemp(prefix="bench_sweep_")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", *args], cwd=work, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"runner {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["none", "mlp"])
    args = parser.parse_args()
    lookbacks = ",".join(str(5 + 5 * i) for i in range(args.jobs))
    print(f"{args.jobs} jobs; {os.cpu_count()} cores; joblib = hydra/launcher=joblib hydra.launcher.n_jobs=2")
    print(f"{'model':<6} {'single run s':>12} {'basic total s':>13} {'beyond 1st s/job':>16} "
          f"{'joblib total s':>14} {'joblib speed-up':>15}")
    for model in args.models:
        extra = ["trainer.epochs=10"] if model == "mlp" else []
        single = run(["+strategy=momentum", f"model={model}", *extra])
        base = ["-m", "+strategy=momentum", f"model={model}", *extra, f"strategy.lookback={lookbacks}", "resume=false"]
        basic = run(base)
        joblib = run([*base, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
        line = (f"{model:<6} {single:>12.2f} {basic:>13.2f} {(basic - single) / (args.jobs - 1):>16.2f} "
                f"{joblib:>14.2f} {basic / joblib:>14.2f}x")
        print(line, flush=True)


if __name__ == "__main__":
    main()
