"""A tracking server that goes away mid-run: a short outage costs nothing, a long one loses nothing.

Each test runs its own ``mlflow server`` on 127.0.0.1 and stops and restarts it on the same port and store.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import free_port, run_cli

pytestmark = pytest.mark.slow


class Server:
    """An MLflow server on a sqlite store, in its own process group so that it can be stopped whole."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root, self.process = root, None
        self.db = root / "server.db"
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.db}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 60
        import urllib.request

        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("the MLflow server did not come up")

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)  # gone at once, as a crashed or redeployed server is
        self.process.wait(timeout=30)
        self.process = None

    def runs(self, status: str) -> int:
        """Runs with this status, read from the store directly (no request to the server)."""
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=1) as connection:
                return connection.execute("SELECT count(*) FROM runs WHERE status = ?", (status,)).fetchone()[0]
        except sqlite3.Error:
            return 0

    def wait_for(self, status: str, count: int, deadline: float = 120) -> None:
        start = time.monotonic()
        while self.runs(status) < count:
            assert time.monotonic() - start < deadline, f"no {count} {status} run(s) appeared"
            time.sleep(0.2)


@pytest.fixture()
def server(tmp_path: Path):
    server = Server(tmp_path / "server")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()


def launch(args: list[str], server: Server, cli_env: dict, cwd: Path) -> subprocess.Popen:
    env = {**cli_env, "MLFLOW_TRACKING_URI": server.uri}
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def experiment_runs(server: Server) -> list:
    client = MlflowClient(server.uri)
    return client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])


def test_a_short_outage_costs_nothing(server: Server, tmp_path: Path, cli_env: dict) -> None:
    process = launch(["+strategy=momentum", "data.start=2008-01-01", "trainer.epochs=2"], server, cli_env, tmp_path)
    server.wait_for("RUNNING", 1)
    server.stop()  # the run trains, then logs into the outage
    time.sleep(5)
    server.start()  # back after ~10 s
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    assert "stopped answering" not in err and len([line for line in err.splitlines() if "Retrying" in line]) == 0
    (run,) = experiment_runs(server)
    assert run.info.status == "FINISHED" and "test_sharpe_ratio" in run.data.metrics
    artifacts = {a.path for a in MlflowClient(server.uri).list_artifacts(run.info.run_id)}
    assert {"backtest", "figures", "config.yaml", ".hydra", "model_inputs"} <= artifacts
    from runner.tracking.model_io import load_torch_model

    assert load_torch_model(f"runs:/{run.info.run_id}/model", server.uri) is not None


def record_metrics(folder: Path) -> dict[tuple[str, int], float]:
    lines = (folder / "record" / "metrics.jsonl").read_text().splitlines()
    return {(m["key"], m["step"]): m["value"] for m in map(json.loads, lines)}


def test_a_long_outage_fails_fast_and_loses_nothing(server: Server, tmp_path: Path, cli_env: dict) -> None:
    process = launch(["+strategy=momentum", "data.start=2008-01-01", "trainer.epochs=3"], server, cli_env, tmp_path)
    server.wait_for("RUNNING", 1)
    server.stop()
    stopped = time.monotonic()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 3 and time.monotonic() - stopped < 120, err[-3000:]
    assert len(err.strip().splitlines()) <= 4 and "Traceback" not in err, err
    assert f"tracking server {server.uri} was lost" in err
    folder = Path(err.split("python -m runner.sync ")[1].split()[0])
    record = folder / "record"
    assert json.loads((record / "run.json").read_text())["status"] == "FINISHED"
    assert {"backtest", "figures", "config.yaml", ".hydra"} <= {p.name for p in (record / "artifacts").iterdir()}
    assert (record / "model" / "MLmodel").is_file()
    server.start()
    synced = run_cli(["runner.sync", str(folder)], {**cli_env, "MLFLOW_TRACKING_URI": server.uri}, tmp_path)
    assert synced.returncode == 0, synced.stderr
    runs = experiment_runs(server)
    recovered = next(r for r in runs if r.data.tags.get("runner.recovered") == "true")
    original = next(r for r in runs if r is not recovered)
    assert recovered.info.status == "FINISHED" and original.info.status == "KILLED"
    assert original.data.tags["runner.superseded_by"] == recovered.info.run_id
    client = MlflowClient(server.uri)
    logged = {(m.key, m.step): m.value for key in recovered.data.metrics for m in client.get_metric_history(
        recovered.info.run_id, key)}
    assert logged == pytest.approx(record_metrics(folder), nan_ok=True)
    assert len([k for k in logged if k[0] == "train_loss"]) == 3  # the curves, step by step
    from runner.tracking.model_io import load_torch_model

    assert load_torch_model(f"runs:/{recovered.info.run_id}/model", server.uri) is not None
    again = run_cli(["runner.sync", str(folder)], {**cli_env, "MLFLOW_TRACKING_URI": server.uri}, tmp_path)
    assert again.returncode == 2 and "already uploaded" in again.stderr
    assert len(experiment_runs(server)) == 2


def test_a_sweep_stops_launching_once_the_server_is_gone(server: Server, tmp_path: Path, cli_env: dict) -> None:
    # 3 retries (~10 s) instead of the runner's 6 (~1 min, which the single run's test above waits out): what is
    # checked here is what the sweep does once its server is given up on, not when that is
    process = launch(["-m", "+strategy=momentum", "data.start=2008-01-01", "trainer.epochs=3", "sweep_name=lost",
                      "strategy.lookback=5,10,20,40"], server, {**cli_env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3"},
                     tmp_path)
    server.wait_for("FINISHED", 2, deadline=240)  # its first two jobs
    server.stop()
    stopped = time.monotonic()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 3 and time.monotonic() - stopped < 120, err[-3000:]
    assert "lost-3" not in out + err  # the fourth job was never launched
    sweep = Path(err.split("python -m runner.sync ")[1].split()[0])
    assert json.loads((sweep / "record" / "run.json").read_text())["status"] == "FAILED"
    recorded = sorted(p.parent.parent.name for p in sweep.glob("*/record/run.json"))
    assert recorded in (["0", "1"], ["0", "1", "2"])  # the third job, if it had started when the server went
    server.start()
    env = {**cli_env, "MLFLOW_TRACKING_URI": server.uri}
    synced = run_cli(["runner.sync", str(sweep)], env, tmp_path)
    assert synced.returncode == 0, synced.stderr
    report = run_cli(["runner.report", "--sweep", "lost", "--json"], env, tmp_path)
    assert report.returncode == 0, report.stderr
    ranked = json.loads(report.stdout)["runs"]
    lookbacks = {"0": 5, "1": 10, "2": 20, "3": 40}  # the jobs' swept values, which their names show
    assert sorted(r["run_name"] for r in ranked) == sorted(f"momentum-mlp-sp500 lookback={lookbacks[job]}"
                                                           for job in recorded)
    runs = experiment_runs(server)
    assert not [r for r in runs if r.info.status == "RUNNING"]


class CuttingProxy:
    """An HTTP/1.1 proxy in front of the real server that, once, forwards a request to ``path`` and then sends back
    only the first half of the server's reply before closing the connection: a server that died while answering."""

    def __init__(self, target: str, path: str) -> None:
        self.target, self.path, self.cut = target, path, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection) -> None:
        reader = connection.makefile("rb")
        upstream = http.client.HTTPConnection(self.target.removeprefix("http://"), timeout=60)
        with connection:
            while True:
                line = reader.readline()
                if not line.strip():
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (header := reader.readline().decode()).strip():
                    key, _, value = header.partition(":")
                    headers[key.strip()] = value.strip()
                body = reader.read(int(headers.get("Content-Length", 0) or 0))
                headers.pop("Connection", None)
                upstream.request(method, path, body=body, headers=headers)
                reply = upstream.getresponse()
                content = reply.read()
                dropped = ("transfer-encoding", "content-length", "connection")
                head = [f"HTTP/1.1 {reply.status} {reply.reason}"] + [
                    f"{k}: {v}" for k, v in reply.getheaders() if k.lower() not in dropped]
                head.append(f"Content-Length: {len(content)}")
                payload = ("\r\n".join(head) + "\r\n\r\n").encode()
                if self.cut == 0 and path.startswith(self.path) and len(content) > 1:
                    self.cut += 1  # stored by the server; the client gets half the reply
                    connection.sendall(payload + content[: len(content) // 2])
                    return
                connection.sendall(payload + content)

    def close(self) -> None:
        self.listener.close()


def test_a_reply_cut_short_is_sent_again_and_costs_nothing(server: Server, tmp_path: Path, cli_env: dict) -> None:
    proxy = CuttingProxy(server.uri, "/api/2.0/mlflow/runs/log-batch")
    try:
        env = {**cli_env, "MLFLOW_TRACKING_URI": proxy.uri}
        done = run_cli(["runner", "+strategy=momentum", "model=none", "data.start=2016-01-01"], env, tmp_path)
    finally:
        proxy.close()
    assert proxy.cut == 1  # the fault happened
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped answering" not in done.stderr and "was lost" not in done.stderr
    (run,) = experiment_runs(server)
    assert run.info.status == "FINISHED" and "test_sharpe_ratio" in run.data.metrics
    assert run.data.params["strategy.lookback"] and "config.yaml" in {
        a.path for a in MlflowClient(server.uri).list_artifacts(run.info.run_id)}
