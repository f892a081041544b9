"""One run's cost: cold wall time of the main command vs the bare heavy imports, the floor a pt2 model sets, and
where the time of the default run goes.

    python bench/run.py [--repeat 3]

Every row is a fresh process (best of ``--repeat``, rows interleaved so that a slow moment of the machine hits
all of them), in a temp dir with its own sqlite store:

- ``bare imports``: ``import mlflow, torch, pandas, matplotlib, hydra``, the issue's yardstick;
- ``+ torch optimizer``: the same, then ``torch.optim.Adam(...)``: torch 2.13's optimizers import torch._dynamo;
- ``floor: + pt2 model into sqlite``: the same, then one small MLP logged with ``mlflow.pytorch.log_model`` in
  pt2 into a new run of the (existing) sqlite store, which every default run must do at least (DESIGN), and
  ``gc.freeze()`` at the end as the runner does;
- ``model=none`` and the default ``+strategy=momentum`` (mlp) runs.

Then the default run once more in this process's child under timers (``--split``): the runner's own phases.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BARE = "import mlflow, torch, pandas, matplotlib, hydra"
BARE_LABEL = f"bare imports ({BARE.removeprefix('import ')})"
OPTIMISER = BARE + "\ntorch.optim.Adam(torch.nn.Linear(4, 1).parameters())"
FLOOR = OPTIMISER + """
import mlflow.pytorch
mlflow.set_tracking_uri(__import__("os").environ["MLFLOW_TRACKING_URI"])
model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).eval()
with mlflow.start_run():
    mlflow.pytorch.log_model(model, name="model", input_example=torch.zeros(2, 4).numpy(),
                             serialization_format="pt2", pip_requirements=[f"torch=={torch.__version__[:6]}"])
__import__("gc").freeze()  # as the runner does at exit: the final collections skip these objects
"""
PHASES = [("runner.evaluation.experiment", "prepare"), ("runner.tracking.local_record", "run_logger"),
          ("runner.ml.training", "train_model"), ("runner.tracking.logger", "MLflowLogger.log_backtest_results"),
          ("runner.tracking.recorder", "_stage_files"), ("runner.tracking.logger", "MLflowLogger.log_model"),
          ("runner.tracking.logger", "MLflowLogger.end_run")]


def timed(args: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def split(argv: list[str]) -> None:
    """Run the CLI in this process with each phase timed; print the phases once the process is done."""
    import atexit
    import runpy

    origin, marks = time.perf_counter(), []

    def timer(owner: object, name: str, label: str) -> None:
        function = getattr(owner, name)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                marks.append((start - origin, time.perf_counter() - start, label))
        setattr(owner, name, wrapper)

    for module_name, attribute in PHASES:
        owner = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        timer(owner, name, attribute)

    @atexit.register
    def report() -> None:
        for start, seconds, label in sorted(marks):
            print(f"  at {start:5.2f} s  {seconds:5.2f} s  {label}", file=sys.stderr)
        print(f"  at {time.perf_counter() - origin:5.2f} s  the run's code is done (exit follows)", file=sys.stderr)

    sys.argv = ["runner", *argv]
    runpy.run_module("runner", run_name="__main__", alter_sys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--split", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.split is not None:
        return split(args.split)
    work = tempfile.mkdtemp(prefix="bench_run_")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONPATH": str(ROOT)}
    py = sys.executable
    rows = {"python -m runner --help": [py, "-m", "runner", "--help"],
            BARE_LABEL: [py, "-c", BARE],
            "+ torch optimizer (imports torch._dynamo)": [py, "-c", OPTIMISER],
            "floor: + pt2 model into sqlite": [py, "-c", FLOOR],
            "+strategy=momentum model=none": [py, "-m", "runner", "+strategy=momentum", "model=none"],
            "+strategy=momentum (mlp, the default)": [py, "-m", "runner", "+strategy=momentum"]}
    timed(rows["+strategy=momentum model=none"], work, env)  # a warm disk cache and an existing store for all
    best = dict.fromkeys(rows, float("inf"))
    for _ in range(args.repeat):
        for label, command in rows.items():
            best[label] = min(best[label], timed(command, work, env))
    bare = best[BARE_LABEL]
    print(f"{'command':<62} {'best wall s':>11} {'x bare':>7}")
    for label, seconds in best.items():
        print(f"{label:<62} {seconds:>11.2f} {seconds / bare:>7.2f}")
    print("\nwhere the default run's time goes (one run, phases timed in its own process):")
    subprocess.run([py, __file__, "--split", "+strategy=momentum"], cwd=work, env=env, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
