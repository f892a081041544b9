"""CPCV's cost: ``+strategy=momentum evaluation=cpcv`` (default mlp; 6 groups, 2 tested: 15 splits, 5 paths) against
the holdout run and walk-forward with 5 folds, and what the split machinery adds beyond training.

    python bench/cpcv.py [--groups 6] [--test-groups 2] [--repeat 2]

In one process, side by side (best of ``--repeat``): holdout (one training), walk-forward (one per fold) and CPCV
(one per split: features once, a dataset and standardisation per split, forecasts, the paths' backtests). The
machinery is CPCV's wall time less its splits' own training time; per split is CPCV's wall time over the splits.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.walk_forward import prepared  # noqa: E402


def timed(overrides: list[str], repeat: int) -> tuple[float, float, int]:
    """(best wall seconds, that run's training seconds, trainings) of prepare + compute."""
    from runner.evaluation.experiment import compute

    best = None
    for _ in range(repeat):
        setup = prepared(overrides)
        start = time.perf_counter()
        outcome = compute(setup)
        wall = time.perf_counter() - start
        trainings = (outcome.cpcv.trainings if outcome.cpcv else outcome.walk.trainings if outcome.walk else
                     [outcome.training])
        if best is None or wall < best[0]:
            best = (wall, sum(t.seconds for t in trainings), len(trainings))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--test-groups", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    common = ["+strategy=momentum", "data.start=2008-01-01"]
    rows = {"holdout": timed(common, args.repeat),
            "walk_forward (5 folds)": timed([*common, "evaluation=walk_forward", "evaluation.folds=5"], args.repeat),
            f"cpcv ({args.groups} groups, {args.test_groups} tested)": timed(
                [*common, "evaluation=cpcv", f"evaluation.groups={args.groups}",
                 f"evaluation.test_groups={args.test_groups}"], args.repeat)}
    print(f"{'evaluation':<28}{'wall s':>9}{'training s':>12}{'trainings':>10}{'per training s':>16}"
          f"{'machinery s':>13}")
    for name, (wall, training, count) in rows.items():
        print(f"{name:<28}{wall:>9.2f}{training:>12.2f}{count:>10}{wall / count:>16.3f}{wall - training:>13.2f}")


if __name__ == "__main__":
    main()
