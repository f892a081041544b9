"""Sweep cost per job: basic launcher vs joblib (n_jobs=2), model=none and model=mlp, vs a single run.

    python bench/sweep.py [--jobs 20] [--models none mlp] [--baseline CHECKOUT] [--rounds 1]

--baseline times another checkout of the project (say a worktree of an earlier commit) the same way, its runs
interleaved with this one's, so that both see the same machine; --rounds repeats each measurement.

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


def run(args: list[str], root: Path = ROOT) -> float:
    work = tempfile.mkdtemp(prefix="bench_sweep_")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONPATH": str(root)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", *args], cwd=work, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"runner {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def per_job(root: Path, model: str, jobs: int) -> tuple[float, float, float]:
    """(single run s, basic sweep s, basic s per job after the first) for one checkout."""
    extra = ["trainer.epochs=10"] if model == "mlp" and root == ROOT else ["model.epochs=10"] if model == "mlp" else []
    lookbacks = ",".join(str(5 + 5 * i) for i in range(jobs))
    single = run(["+strategy=momentum", f"model={model}", *extra], root)
    basic = run(["-m", "+strategy=momentum", f"model={model}", *extra, f"strategy.lookback={lookbacks}",
                 "resume=false"], root)
    return single, basic, (basic - single) / (jobs - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["none", "mlp"])
    parser.add_argument("--baseline", type=Path, help="another checkout to time the same way, interleaved")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    lookbacks = ",".join(str(5 + 5 * i) for i in range(args.jobs))
    print(f"{args.jobs} jobs; {os.cpu_count()} cores; joblib = hydra/launcher=joblib hydra.launcher.n_jobs=2")
    print(f"{'checkout':<9} {'model':<6} {'single run s':>12} {'basic total s':>13} {'beyond 1st s/job':>16} "
          f"{'joblib total s':>14} {'joblib speed-up':>15}")
    checkouts = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    for _ in range(args.rounds):
        for model in args.models:
            for label, root in checkouts:
                single, basic, job = per_job(root, model, args.jobs)
                extra = ["trainer.epochs=10"] if model == "mlp" else []
                joblib = (run(["-m", "+strategy=momentum", f"model={model}", *extra, f"strategy.lookback={lookbacks}",
                               "resume=false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
                          if root == ROOT else float("nan"))
                print(f"{label:<9} {model:<6} {single:>12.2f} {basic:>13.2f} {job:>16.2f} {joblib:>14.2f} "
                      f"{basic / joblib:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
