"""The CUDA path end to end, on a machine with a GPU: the real CLI with trainer.device=cuda/auto/cpu.

    python bench/cuda_check.py [--work DIR]

Checks (each printed as PASS/FAIL, exit 1 if any failed): runs finish with train_device=cuda; two seeded
cuda runs give identical metrics; auto picks cuda; the model trained on cuda reloads and predicts on the
CPU; LSTM trains on cuda; a 2-worker joblib sweep on cuda loses no run. Also prints cuda-vs-cpu metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)
    if not ok:
        failures.append(what)


def cli(work: Path, uri: str, *args: str) -> tuple[int, float, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", *args], cwd=work, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], sep="\n")
    return done.returncode, wall, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default=None)
    parser.add_argument("--device", default="cuda", help="cpu only to try this script on a machine without a GPU")
    args = parser.parse_args()
    gpu = args.device
    work = Path(args.work or tempfile.mkdtemp(prefix="cuda_check_"))
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"

    import torch
    from mlflow import MlflowClient

    from runner.tracking.model_io import load_torch_model

    print(f"torch {torch.__version__}; CUDA available: {torch.cuda.is_available()}; "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}", flush=True)
    cases = {"mlp-cuda-1": ("model=mlp", f"trainer.device={gpu}"), "mlp-cuda-2": ("model=mlp", f"trainer.device={gpu}"),
             "mlp-auto": ("model=mlp", "trainer.device=auto"), "mlp-cpu": ("model=mlp", "trainer.device=cpu"),
             "lstm-cuda": ("model=lstm", f"trainer.device={gpu}")}
    for name, overrides in cases.items():
        rc, wall, _ = cli(work, uri, "+strategy=momentum", *overrides, f"run_name={name}")
        print(f"{name}: exit {rc}, {wall:.1f} s wall", flush=True)
        check(rc == 0, f"{name} exits 0")

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("trading_experiment")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])} if experiment else {}
    for name in cases:
        run = runs.get(name)
        check(run is not None and run.info.status == "FINISHED", f"{name} run FINISHED")
        if run is None:
            continue
        metrics = run.data.metrics
        print(f"  {name}: train_device={run.data.tags.get('train_device')} train_seconds="
              f"{metrics.get('train_seconds', float('nan')):.2f} best_epoch={metrics.get('best_epoch')} "
              f"val_sharpe_ratio={metrics.get('val_sharpe_ratio')} "
              f"test_sharpe_ratio={metrics.get('test_sharpe_ratio')}")
        expected = "cpu" if name == "mlp-cpu" else gpu
        check(run.data.tags.get("train_device") == expected, f"{name} train_device == {expected}")
    if "mlp-cuda-1" in runs and "mlp-cuda-2" in runs:
        first, second = runs["mlp-cuda-1"].data.metrics, runs["mlp-cuda-2"].data.metrics
        differing = sorted(k for k in first if k != "train_seconds" and first[k] != second.get(k)
                           and not (first[k] != first[k] and second.get(k) != second.get(k)))
        check(not differing, f"two seeded cuda runs give identical metrics (differing: {differing[:5]})")
        model = load_torch_model(f"runs:/{runs['mlp-cuda-1'].info.run_id}/model", tracking_uri=uri)
        stats = client.download_artifacts(runs["mlp-cuda-1"].info.run_id, "model_inputs/standardisation.json",
                                          str(work))
        n_inputs = len(json.loads(Path(stats).read_text())["features"])
        prediction = model(torch.zeros(3, n_inputs))
        check(tuple(prediction.shape)[0] == 3 and prediction.device.type == "cpu",
              f"cuda-trained model reloads and predicts on the CPU (shape {tuple(prediction.shape)})")

    rc, wall, _ = cli(work, uri, "-m", "+strategy=momentum", f"trainer.device={gpu}", "strategy.lookback=10,20",
                      "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "experiment_name=sweep", "resume=false")
    print(f"joblib sweep on cuda: exit {rc}, {wall:.1f} s wall", flush=True)
    sweep = client.get_experiment_by_name("sweep")
    children = [r for r in client.search_runs([sweep.experiment_id]) if "mlflow.parentRunId" in r.data.tags] \
        if sweep else []
    check(rc == 0 and len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
          and all(r.data.tags.get("train_device") == gpu for r in children),
          f"2-worker joblib sweep on cuda: {len(children)} children FINISHED on cuda")
    print(f"\n{len(failures)} check(s) failed" if failures else "\nall checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
