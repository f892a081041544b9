"""Walk-forward's cost: ``+strategy=momentum evaluation=walk_forward evaluation.folds=5`` (default mlp) against
5 x the holdout run's training time, and what the fold machinery adds beyond training.

    python bench/walk_forward.py [--folds 5] [--repeat 2]

In one process, side by side: the holdout run's weights (one training), then walk-forward's (one training per
fold, features, datasets, forecasts and the stitched and per-fold backtests). The machinery is walk-forward's
wall time less its folds' own training time. Then both whole CLI runs in subprocesses.
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
sys.path.insert(0, str(ROOT))


def prepared(overrides: list[str]):  # noqa: ANN201 - runner.evaluation.experiment.Prepared
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config.schema import register
    from runner.evaluation.experiment import prepare

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
    return prepare(config)


def cli(args: list[str], work: str) -> float:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", *args], cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from runner.evaluation.experiment import target_weights
    from runner.evaluation.walk_forward import walk_forward

    holdout = prepared(["+strategy=momentum"])
    walk = prepared(["+strategy=momentum", "evaluation=walk_forward", f"evaluation.folds={args.folds}"])
    rows = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        _, training, _ = target_weights(holdout)
        holdout_wall, holdout_train = time.perf_counter() - start, training.seconds
        start = time.perf_counter()
        result = walk_forward(walk)
        walk_wall = time.perf_counter() - start
        walk_train = sum(t.seconds for t in result.trainings)
        rows.append((holdout_wall, holdout_train, walk_wall, walk_train))
    best = min(rows, key=lambda r: r[2])
    holdout_wall, holdout_train, walk_wall, walk_train = best
    print(f"holdout: weights {holdout_wall:.2f} s, of which training {holdout_train:.2f} s")
    print(f"walk-forward ({args.folds} folds): weights {walk_wall:.2f} s, of which training {walk_train:.2f} s "
          f"(epochs per fold: {[len(t.history['val_loss']) for t in result.trainings]})")
    print(f"{args.folds} x holdout training: {args.folds * holdout_train:.2f} s; walk-forward / that: "
          f"{walk_wall / (args.folds * holdout_train):.2f}")
    print(f"fold machinery (walk-forward wall less its training): {walk_wall - walk_train:.3f} s "
          f"(holdout's, likewise: {holdout_wall - holdout_train:.3f} s)")
    with tempfile.TemporaryDirectory() as work:
        plain = cli(["+strategy=momentum"], work)
        folded = cli(["+strategy=momentum", "evaluation=walk_forward", f"evaluation.folds={args.folds}"], work)
    print(f"whole CLI runs: holdout {plain:.2f} s, walk-forward {folded:.2f} s")


if __name__ == "__main__":
    main()
