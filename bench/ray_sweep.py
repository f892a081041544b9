"""Ray launcher benchmark: what a job costs on Ray beside the basic launcher, and an 8-job ``model=mlp`` sweep with
the basic launcher, joblib and Ray side by side in one run.

    python bench/ray_sweep.py [--sizes 4 12] [--skip-mlp]

It starts its own MLflow server (sqlite backend, served artifacts) and a Ray head node, both on 127.0.0.1, as a
cluster sweep needs (a Ray sweep joining a cluster refuses a local store), and stops them at the end. Every
sweep is the real CLI in a subprocess, tracked on that server.

Per-job overhead: sweeps of trivial jobs (``model=none``, 300 synthetic bars) at two sizes; the wall time per
extra job is the slope. The basic launcher runs one job at a time (slope = one job), Ray runs as many as the
cluster has CPUs (2 here, one per job), so Ray's per-job overhead is ``concurrency * slope_ray - slope_basic``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ui_screenshots import wait_healthy  # bench/ui_screenshots.py (this folder is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_PORT, RAY_PORT, CONCURRENCY = 57000, 57379, 2
TRIVIAL = ["+strategy=buy_and_hold", "model=none", "data=synthetic", "data.n_bars=300"]
MLP = ["+strategy=momentum", "model=mlp", "data.start=2010-01-01", "trainer.epochs=10"]


def start_services(folder: Path) -> subprocess.Popen:
    """The server, and the Ray head with token authentication on (its own token; the sweeps get it too)."""
    (folder / "ray_token").write_text(secrets.token_hex(32))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(folder / "ray_token"))
    server = subprocess.Popen(["mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/server.db",
                               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(MLFLOW_PORT), "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_healthy(f"http://127.0.0.1:{MLFLOW_PORT}")
    subprocess.run(["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={RAY_PORT}",
                    f"--num-cpus={CONCURRENCY}", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    return server


def sweep(args: list[str], folder: Path, launcher: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "runner", "-m", *args, *launcher, "tracking=server",
               f"tracking.uri=http://127.0.0.1:{MLFLOW_PORT}", f"experiment_name=bench_{time.time_ns()}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(launcher) or 'basic'} sweep failed:\n{done.stderr[-3000:]}")
    return wall


def values(n: int) -> str:
    return "strategy.long_only=true,false data.seed=" + ",".join(str(i) for i in range(n // 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs=2, type=int, default=[4, 12])
    parser.add_argument("--skip-mlp", action="store_true")
    args = parser.parse_args()
    ray = ["hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{RAY_PORT}"]
    joblib = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={CONCURRENCY}"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = start_services(folder)
        try:
            small, large = args.sizes
            walls = {}
            for name, launcher in (("basic", []), ("ray", ray)):
                for n in (small, large):
                    walls[name, n] = sweep([*TRIVIAL, *values(n).split()], folder, launcher)
                    print(f"trivial jobs x{n:<3} {name:<6} {walls[name, n]:6.1f} s", flush=True)
            slope = {name: (walls[name, large] - walls[name, small]) / (large - small) for name in ("basic", "ray")}
            print(f"wall per extra job: basic {slope['basic']:.2f} s, ray {slope['ray']:.2f} s "
                  f"({CONCURRENCY} at once); ray's per-job overhead = {CONCURRENCY} x {slope['ray']:.2f} - "
                  f"{slope['basic']:.2f} = {CONCURRENCY * slope['ray'] - slope['basic']:.2f} s")
            if not args.skip_mlp:
                eight = [*MLP, "strategy.lookback=5,10,20,40", "strategy.long_only=true,false"]
                mlp = {name: sweep(eight, folder, launcher) for name, launcher in
                       (("basic", []), ("joblib", joblib), ("ray", ray))}
                print("8-job model=mlp sweep: " + ", ".join(f"{k} {v:.1f} s" for k, v in mlp.items())
                      + f"; ray / basic = {mlp['ray'] / mlp['basic']:.2f}, joblib / basic = "
                      f"{mlp['joblib'] / mlp['basic']:.2f}")
        finally:
            subprocess.run(["ray", "stop", "--force"], capture_output=True)
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
