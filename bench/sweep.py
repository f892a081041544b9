"""Sweep cost per job: basic launcher vs joblib (n_jobs=2), model=none and model=mlp, vs a single run; and with
--grid, the batch launcher on a rule grid.

    python bench/sweep.py [--jobs 20] [--models none mlp] [--baseline CHECKOUT] [--rounds 1]
    python bench/sweep.py --grid [--fast 5 25] [--slow 30 230] [--baseline CHECKOUT]   # 400 SMA pairs on sp500

--grid times, side by side in one run: a single sma_crossover run; the grid with hydra/launcher=batch (seconds per
configuration beyond the single run) with the default sweeper (hydra/sweeper=grid) and with Hydra's basic sweeper,
which composes every job before any launcher sees one; Hydra's composition of one job; MLflow's own floor for one
child run (create, one log_batch of 40 params and 70 metrics, one small Parquet table, terminate, on sqlite); and,
when vectorbt is installed (pip install -e ".[bench]"), the grid's engine pass against vectorbt's
Portfolio.from_signals over the same columns.

--baseline times another checkout of the project (say a worktree of an earlier commit) the same way, its runs
interleaved with this one's, so that both see the same machine; --rounds repeats each measurement, the
checkouts' order flipped every round.

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


def mlflow_floor(runs: int = 40) -> float:
    """Seconds per child run of MLflow alone on a fresh sqlite store: create, one log_batch (40 params, 70
    metrics), one small Parquet table, terminate."""
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    work = Path(tempfile.mkdtemp(prefix="bench_floor_"))
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.create_experiment("floor", artifact_location=str(work / "artifacts"))
    parent = client.create_run(experiment).info.run_id
    table = work / "table"
    table.mkdir()
    pd.DataFrame({"equity": np.ones(5000), "weight": np.zeros(5000)}).to_parquet(table / "portfolio_values.parquet")
    start = time.perf_counter()
    for _ in range(runs):
        run = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_batch(run, params=[Param(f"p{i}", str(i)) for i in range(40)],
                         metrics=[Metric(f"m{i}", float(i), 0, 0) for i in range(70)])
        client.log_artifacts(run, str(table), "backtest")
        client.set_terminated(run)
    return (time.perf_counter() - start) / runs


def composition_seconds(jobs: int = 20) -> float:
    """Seconds Hydra takes to compose one sweep job's config (what Hydra's basic sweeper does once per job to
    validate the sweep, before it hands the jobs to any launcher; the grid sweeper, a covering set of jobs)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from runner.config.schema import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["+strategy=sma_crossover", "model=none"],
                                           run_mode=RunMode.MULTIRUN)
        start = time.perf_counter()
        for i in range(jobs):
            loader.load_sweep_config(master, ["+strategy=sma_crossover", f"strategy.fast={5 + i}", "strategy.slow=50"])
        return (time.perf_counter() - start) / jobs


def engine_against_vectorbt(fast: range, slow: range) -> None:
    """The grid's engine pass (runner.engine.grid.grid_arrays) against vectorbt's from_signals, same columns."""
    import numpy as np

    try:
        import vectorbt as vbt
    except ImportError:
        print("engine pass vs vectorbt: vectorbt is not installed (pip install -e \".[bench]\")")
        return
    import pandas as pd
    from engine import best_of  # bench/engine.py (this folder is on sys.path when run as a script)

    from runner.config.schema import BacktestConf
    from runner.data.sources import BundledSeries
    from runner.engine.backtest import segment_bounds
    from runner.engine.grid import grid_arrays
    from strategies.base import rolling_mean

    bars = BundledSeries("sp500").load()
    close = bars["close"].to_numpy(dtype=float)
    index = pd.DatetimeIndex(bars.index)
    pairs = [(f, s) for f in fast for s in slow]
    fast_mean = {f: rolling_mean(close, f) for f in fast}
    slow_mean = {s: rolling_mean(close, s) for s in slow}
    above = np.column_stack([fast_mean[f] > slow_mean[s] for f, s in pairs])
    weights = np.where(above, 1.0, -1.0)
    config = BacktestConf(periods_per_year=252)
    bounds = segment_bounds(len(close), int(len(close) * 0.6), int(len(close) * 0.8))
    ours = best_of(lambda: grid_arrays(close, weights, config, index, bounds), 3)
    prices = np.broadcast_to(close[:, None], weights.shape)
    entries, exits = above, ~above

    def vectorbt() -> None:
        vbt.Portfolio.from_signals(prices, entries, exits, short_entries=exits, short_exits=entries,
                                   fees=config.cost_rate, freq="1D").total_return()

    vectorbt()  # numba compiles on the first call: not timed
    theirs = best_of(vectorbt, 3)
    print(f"engine pass, {len(close)} bars x {len(pairs)} configurations: ours {ours * 1000:.0f} ms, vectorbt "
          f"from_signals {theirs * 1000:.0f} ms (ours / vectorbt = {ours / theirs:.2f})")


def grid(fast: range, slow: range, checkouts: list[tuple[str, Path]], rounds: int = 1) -> None:
    """Each round times every checkout, in turn; the order flips every round (whatever runs first or last on this
    machine, each checkout gets it as often)."""
    n = len(fast) * len(slow)
    print(f"{n} configurations, sma_crossover on sp500; {os.cpu_count()} cores")
    sweep = ["-m", "+strategy=sma_crossover", "model=none", f"strategy.fast=range({fast.start},{fast.stop})",
             f"strategy.slow=range({slow.start},{slow.stop},{slow.step})", "hydra/launcher=batch", "resume=false"]
    beyond: dict[str, float] = {}
    for turn in range(rounds):
        for label, root in checkouts[::-1] if turn % 2 else checkouts:
            single = run(["+strategy=sma_crossover", "model=none"], root)
            # this checkout: its default sweeper (grid) and Hydra's basic one; a baseline: its own default
            for sweeper in (["grid", "basic"] if root == ROOT else [""]):
                batch = run([*sweep, f"hydra/sweeper={sweeper}"] if sweeper else sweep, root)
                beyond[sweeper] = (batch - single) / n
                named = f" with hydra/sweeper={sweeper}" if sweeper else ""
                print(f"{label}: single run {single:.2f} s; batch launcher{named} {batch:.1f} s: "
                      f"{beyond[sweeper]:.3f} s per configuration beyond the single run", flush=True)
    compose = composition_seconds()
    floor = mlflow_floor()
    print(f"Hydra's composition of one job {compose:.3f} s (the basic sweeper composes all {n} jobs before "
          "launching any; the grid sweeper one: a strategy's parameters take any scalar); MLflow's own floor per "
          f"child run {floor:.3f} s; this checkout's batch beyond a single run / floor = "
          f"{beyond['grid'] / floor:.2f}x (grid sweeper), {beyond['basic'] / floor:.2f}x (basic sweeper)")
    engine_against_vectorbt(fast, slow)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", action="store_true", help="the batch launcher on an SMA grid (see above)")
    parser.add_argument("--fast", type=int, nargs=2, default=[5, 25])
    parser.add_argument("--slow", type=int, nargs=2, default=[30, 230])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["none", "mlp"])
    parser.add_argument("--baseline", type=Path, help="another checkout to time the same way, interleaved")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    checkouts = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    if args.grid:
        grid(range(*args.fast), range(args.slow[0], args.slow[1], 10), checkouts, args.rounds)
        return
    lookbacks = ",".join(str(5 + 5 * i) for i in range(args.jobs))
    print(f"{args.jobs} jobs; {os.cpu_count()} cores; joblib = hydra/launcher=joblib hydra.launcher.n_jobs=2")
    print(f"{'checkout':<9} {'model':<6} {'single run s':>12} {'basic total s':>13} {'beyond 1st s/job':>16} "
          f"{'joblib total s':>14} {'joblib speed-up':>15}")
    for turn in range(args.rounds):
        for model in args.models:
            for label, root in checkouts[::-1] if turn % 2 else checkouts:
                single, basic, job = per_job(root, model, args.jobs)
                extra = ["trainer.epochs=10"] if model == "mlp" else []
                joblib = (run(["-m", "+strategy=momentum", f"model={model}", *extra, f"strategy.lookback={lookbacks}",
                               "resume=false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
                          if root == ROOT else float("nan"))
                print(f"{label:<9} {model:<6} {single:>12.2f} {basic:>13.2f} {job:>16.2f} {joblib:>14.2f} "
                      f"{basic / joblib:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
