"""How a run scales with the bars: 1e4, 1e5 and 1e6 one-minute bars from a CSV, side by side in one run.

    python bench/scale.py [--bars 10000 100000 1000000] [--dir /tmp/scale_bench]

For each size: the whole CLI run (``+strategy=sma_crossover model=none data=csv``) in a subprocess, with its
peak resident set (``wait4``) and the bytes of artifacts it left; then, in this process, the same run's
phases timed one by one: data (load the CSV), backtest (signal + engine), figures (draw + save the equity
figure), logging (everything ``log_outcome`` sends, less the figure). The reference is a 5,000-bar run of
the same command. The CSVs are generated once (a seeded random walk) and reused.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def minute_csv(folder: Path, n: int) -> Path:
    path = folder / f"minutes_{n}.csv"
    if path.exists():
        return path
    rng = np.random.default_rng(n)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.0005, n)))
    spread = np.abs(rng.normal(0, 0.0003, n)) * close
    frame = pd.DataFrame({"timestamp": pd.date_range("2020-01-01 09:30", periods=n, freq="min"),
                          "open": np.r_[close[0], close[:-1]].round(4), "high": (close + spread).round(4),
                          "low": (close - spread).round(4), "close": close.round(4),
                          "volume": rng.integers(100, 10_000, n)})
    frame.to_csv(path, index=False)
    return path


def cli_run(csv: Path, work: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS MB, artifact bytes) of one CLI run in a fresh store."""
    store = work / f"store_{csv.stem}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "runner", "+strategy=sma_crossover", "model=none", "data=csv",
                              f"data.path={csv}"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(child.stderr.read().decode()[-2000:])
    artifacts = sum(p.stat().st_size for p in (store / "mlartifacts").rglob("*") if p.is_file())
    return wall, usage.ru_maxrss / 1024, artifacts


def phases(csv: Path, work: Path) -> dict[str, float]:
    """The run's phases timed in this process, as ``runner.evaluation.experiment`` runs them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config.schema import register
    from runner.evaluation.experiment import prepare
    from runner.logger import MLflowLogger
    from runner.tracking.recorder import PNG, RunExtras, log_outcome
    from runner.views.figures import equity_figure

    register()  # the real composition, as the CLI does it
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = OmegaConf.to_container(compose(config_name="config", overrides=[
            "+strategy=sma_crossover", "model=none", "data=csv", f"data.path={csv}"]), resolve=True)
    out: dict[str, float] = {}
    start = time.perf_counter()
    prepared = prepare(config)
    out["data"] = time.perf_counter() - start
    out["bars_mb"] = prepared.book.bars.memory_usage(deep=True).sum() / 1e6
    from runner.engine.backtest import run_backtest
    from runner.evaluation.experiment import target_weights
    from runner.evaluation.outcome import Outcome

    start = time.perf_counter()
    weights, _, _ = target_weights(prepared)
    result = run_backtest(prepared.book.close, weights, prepared.train_end, prepared.val_end, prepared.backtest,
                          prepared.book.index)
    out["backtest"] = time.perf_counter() - start
    from runner.views.figures import new_figure

    new_figure(1, 1).savefig(io.BytesIO(), format="png")  # matplotlib's first import and font cache: not timed
    start = time.perf_counter()
    equity_figure(result).savefig(io.BytesIO(), format="png", **PNG)
    out["figures"] = time.perf_counter() - start
    logger = MLflowLogger("phases", f"sqlite:///{work}/phases_{csv.stem}/mlflow.db")
    logger.start_run()
    start = time.perf_counter()
    log_outcome(logger, prepared, Outcome(result, 0.0), RunExtras(config))
    out["logging"] = time.perf_counter() - start - out["figures"]
    logger.end_run()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "scale_bench")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run_", dir=args.dir))
    sizes = [5_000, *args.bars]
    csvs = {n: minute_csv(args.dir, n) for n in sizes}
    print(f"{'bars':>9} {'CSV MB':>7} {'bars MB':>8} {'run s':>7} {'peak RSS MB':>12} {'artifacts MB':>13} "
          f"{'data s':>7} {'backtest s':>10} {'figures s':>10} {'logging s':>10}")
    reference = None
    for n in sizes:
        wall, rss, artifacts = cli_run(csvs[n], work)
        split = phases(csvs[n], work)
        reference = reference or (wall, split["data"])
        print(f"{n:>9,} {csvs[n].stat().st_size / 1e6:>7.1f} {split['bars_mb']:>8.1f} {wall:>7.2f} {rss:>12.0f} "
              f"{artifacts / 1e6:>13.2f} {split['data']:>7.2f} {split['backtest']:>10.3f} {split['figures']:>10.3f} "
              f"{split['logging']:>10.3f}")
    wall5k, data5k = reference
    print(f"goal at the largest size: run <= 1.5 x the 5,000-bar run ({wall5k:.2f} s) plus the bars' own load time "
          f"(the data column, less the 5,000-bar run's {data5k:.2f} s)")


if __name__ == "__main__":
    main()
