"""get_best_run vs the original sketch (every run read into a DataFrame) on large experiments.

    python bench/best_run.py --runs 1000 10000 [--db-dir /tmp/best_run_bench]

Populating 10k runs through MlflowClient takes ~10 minutes; stores are reused when present.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from runner.logger import MLflowLogger


def populate(uri: str, n: int) -> None:
    client = MlflowClient(uri)
    if client.get_experiment_by_name("bench") is not None:
        return
    experiment = client.create_experiment("bench", artifact_location=str(Path(uri[10:]).parent / "art"))
    rng = random.Random(0)
    for i in range(n):
        run = client.create_run(experiment, run_name=f"r{i}")
        now = int(time.time() * 1000)
        metrics = [Metric(f"{s}_{m}", rng.gauss(0, 1), now, 0) for s in ("train", "val", "test")
                   for m in ("sharpe_ratio", "total_return", "max_drawdown", "cagr")]
        params = [Param(f"strategy.p{j}", str(rng.random())) for j in range(20)]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id, "FINISHED")


def sweep_parent(uri: str, children: int = 20) -> str:
    """A sweep parent with 20 children inside the big experiment (the sweep-end winner query)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench").experiment_id
    found = client.search_runs([experiment], "tags.bench_sweep = 'parent'", max_results=1)
    if found:
        return found[0].info.run_id
    parent = client.create_run(experiment, run_name="sweep", tags={"bench_sweep": "parent"}).info.run_id
    rng = random.Random(1)
    for i in range(children):
        run = client.create_run(experiment, run_name=f"sweep-{i}", tags={"mlflow.parentRunId": parent})
        client.log_metric(run.info.run_id, "val_sharpe_ratio", rng.gauss(0, 1))
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def seed_sketch(uri: str) -> str:
    """The original approach: all runs into a DataFrame, then idxmax."""
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["bench"])
    return runs.loc[runs["metrics.val_sharpe_ratio"].idxmax(), "run_id"]


def plain_search(uri: str) -> str:
    return MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("bench").experiment_id],
        order_by=["metrics.val_sharpe_ratio DESC"], max_results=1)[0].info.run_id


def timed(func, *args) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        value = func(*args)
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", nargs="+", type=int, default=[1000, 10000])
    parser.add_argument("--db-dir", default="/tmp/best_run_bench")
    args = parser.parse_args()
    Path(args.db_dir).mkdir(parents=True, exist_ok=True)
    print(f"{'runs':>7} {'sketch (all runs) s':>20} {'search_runs(max=1) s':>21} {'get_best_run s':>15} "
          f"{'speed-up vs sketch':>19} {'vs search_runs':>15} {'sweep winner s':>14}")
    for n in args.runs:
        uri = f"sqlite:///{Path(args.db_dir) / f'runs_{n}.db'}"
        populate(uri, n)
        logger = MLflowLogger("bench", uri)
        sketch_s, sketch_id = timed(seed_sketch, uri)
        plain_s, plain_id = timed(plain_search, uri)
        ours_s, ours = timed(logger.get_best_run, "val_sharpe_ratio")
        assert ours["run_id"] == sketch_id == plain_id, "all three must agree on the winner"
        sweep_s, sweep_winner = timed(logger.get_best_run, "val_sharpe_ratio", "max",
                                      f"tags.mlflow.parentRunId = '{sweep_parent(uri)}'")
        print(f"{n:>7} {sketch_s:>20.3f} {plain_s:>21.3f} {ours_s:>15.4f} {sketch_s / ours_s:>19.0f}x "
              f"{plain_s / ours_s:>14.0f}x {sweep_s:>12.4f}")


if __name__ == "__main__":
    main()
