"""``python -m runner.clean`` on a 1,000-run store: the dry run and the purge, wall time and disk freed.

    python bench/clean.py [--runs 1000] [--dir /tmp/clean_bench]

Each store is built once (one run in N FAILED or KILLED, the rest FINISHED; half the runs of engine version 1;
~60 KB of artifacts per run, plus 10 orphaned folders) and copied fresh for each measured command, which runs
as a user runs it: a subprocess.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATUSES = ("FINISHED", "FAILED", "KILLED")


def populate(folder: Path, n: int, cleanable_every: int) -> None:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    if (folder / "mlflow.db").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.create_experiment("trading_experiment", artifact_location=(folder / "mlartifacts").as_uri())
    rng = random.Random(0)
    for i in range(n):
        run = client.create_run(experiment, run_name=f"run_{i}")
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(f"val_m{j}", rng.gauss(0, 1), now, 0) for j in range(20)],
                         params=[Param(f"strategy.p{j}", str(rng.random())) for j in range(20)],
                         tags=[RunTag("runner.engine_version", str(1 + i % 2))])
        artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
        (artifacts / "backtest").mkdir(parents=True)
        (artifacts / "backtest" / "portfolio_values.json").write_bytes(os.urandom(60_000))
        client.set_terminated(run.info.run_id, STATUSES[1 + i // cleanable_every % 2] if i % cleanable_every == 0
                              else "FINISHED")
    for i in range(10):
        orphan = folder / "mlartifacts" / f"{i:032x}" / "artifacts"
        orphan.mkdir(parents=True)
        (orphan / "x.bin").write_bytes(os.urandom(10_000))


def disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(template: Path, args: list[str]) -> tuple[float, int, str]:
    work = template.with_name(template.name + "_work")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work)
    db = work / "mlflow.db"  # the experiment's artifact root points at the template: repoint the copy
    import sqlite3

    with sqlite3.connect(db) as con:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            con.execute(f"UPDATE {table} SET {column} = REPLACE({column}, ?, ?)",
                        (template.as_uri(), work.as_uri()))
    before = disk(work)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner.clean", "--tracking-uri", f"sqlite:///{db}", *args],
                          capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return seconds, before - disk(work), done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/clean_bench"))
    parser.add_argument("--cleanable-every", type=int, nargs="+", default=[10, 2],
                        help="one run in N ends FAILED or KILLED (the rest FINISHED): one store per N")
    args = parser.parse_args()
    for every in args.cleanable_every:
        template = args.dir / f"store_{args.runs}_every_{every}"
        start = time.perf_counter()
        populate(template, args.runs, every)
        built = time.perf_counter() - start
        print(f"store: {args.runs} runs, one in {every} FAILED or KILLED, {disk(template) / 1e6:.1f} MB "
              f"(built or reused in {built:.0f} s)")
        for label, extra in (("dry run --status FAILED,KILLED", ["--status", "FAILED,KILLED"]),
                             ("--status FAILED,KILLED --yes", ["--status", "FAILED,KILLED", "--yes"]),
                             ("--before-version 2 --yes", ["--before-version", "2", "--yes"])):
            seconds, freed, last = measure(template, extra)
            print(f"  {label:<34} {seconds:6.2f} s  freed {freed / 1e6:6.1f} MB  | {last}")


if __name__ == "__main__":
    main()
