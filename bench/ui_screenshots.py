"""What a user sees in the MLflow UI, as headless Chromium renders it: the experiment's runs (the training
view link the runner prints, and the experiment as a click in MLflow's own list opens it), one run's page, its
tearsheet in the artifact viewer, a sweep parent's page (the winner's trial statistics) and a CPCV run's page.

    python bench/ui_screenshots.py [--out /tmp/ui_shots] [--chromium chromium]

Runs one experiment and a 3-job sweep into a fresh sqlite store, serves it with ``mlflow ui`` on 127.0.0.1,
and writes ``experiment.png``, ``experiment_clicked.png``, ``run.png``, ``tearsheet.png``, ``sweep.png`` and
``cpcv_run.png`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(base_url: str, tries: int = 120) -> None:
    """Poll ``<base_url>/health`` every half second until an MLflow server answers (at most ``tries`` times)."""
    for _ in range(tries):
        try:
            urllib.request.urlopen(f"{base_url}/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)


def runner(args: list[str], work: Path, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return done.stdout


def screenshot(chromium: str, url: str, path: Path) -> None:
    subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1500,950", "--virtual-time-budget=20000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "ui_shots")
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ui_"))
    uri = f"sqlite:///{work}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(ROOT)}
    single = runner(["runner", "+strategy=momentum", "model=none"], work, env)
    sweep = runner(["runner", "-m", "+strategy=momentum", "model=none", "strategy.lookback=5,20,60"], work, env)
    cpcv = runner(["runner", "+strategy=momentum", "model=linear", "trainer.epochs=2", "data=synthetic",
                   "data.n_bars=900", "evaluation=cpcv"], work, env)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        local = f"http://127.0.0.1:{port}"
        run_link = re.search(r"this run: (\S+)", single).group(1)
        links = {"experiment.png": re.search(r"runs: (\S+)", single).group(1),
                 # where a click in MLflow's own experiment list lands (no workflowType in the link): with the
                 # experiment tagged mlflow.experimentKind=custom_model_development, the training views
                 "experiment_clicked.png": re.search(r"runs: (\S+)", single).group(1).split("?")[0],
                 "run.png": run_link,
                 "tearsheet.png": run_link.replace("?workflowType=machine_learning",
                                                   "/artifacts/tearsheet.html?workflowType=machine_learning"),
                 "sweep.png": re.search(r"the sweep: (\S+)", sweep).group(1),
                 "cpcv_run.png": re.search(r"this run: (\S+)", cpcv).group(1)}
        for name, link in links.items():
            url = link.replace("http://127.0.0.1:5000", local)
            screenshot(args.chromium, url, args.out / name)
            print(f"{name}: {url}")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
