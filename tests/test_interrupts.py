"""Ctrl-C (SIGINT to the foreground process group) and SIGTERM (to the launching process) at several moments of
real sweeps, basic and joblib: one line, exit 130 or 143, the parent and every started child KILLED, nothing
RUNNING, no job started after the signal, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow
JOBS = "strategy.lookback=" + ",".join(str(k) for k in range(2, 42))
RULE = ["model=none", "data=synthetic", "data.n_bars=600"]
MODEL = ["model=linear", "trainer.epochs=2", "data=synthetic", "data.n_bars=600"]


def _interrupt(tmp_path: Path, env: dict[str, str], args: list[str], sig: signal.Signals, trigger: str,
               wait_s: float = 0.0) -> tuple[int, list[str], float]:
    """Launch a sweep in its own process group, send ``sig`` once an output line contains ``trigger`` (then
    ``wait_s`` more), and return (exit code, its output lines, when the signal was sent)."""
    process = subprocess.Popen([sys.executable, "-m", "runner", "-m", "+strategy=momentum", *args], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if trigger in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(180), lines[-20:]
    time.sleep(wait_s)
    sent = time.time()
    if sig == signal.SIGINT:
        os.killpg(process.pid, sig)  # what a terminal's Ctrl-C does: the whole foreground group
    else:
        process.send_signal(sig)
    code = process.wait(timeout=300)
    reader.join(timeout=30)
    return code, lines, sent


def _check(tracking_uri: str, code: int, lines: list[str], sent: float, sig: signal.Signals) -> None:
    assert code == 128 + sig, lines[-20:]
    assert not any("Traceback" in line for line in lines), lines
    stops = [line for line in lines if line.startswith("interrupted")]
    assert stops == [lines[-1]] and lines[-1].startswith(f"interrupted (received {sig.name})"), lines[-5:]
    assert "ended KILLED; no job starts after it" in lines[-1]
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("runner.role") == "sweep_parent"]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "KILLED" and children
    others = [(r.info.run_name, r.info.status, r.data.tags.get("error")) for r in children
              if r.info.status not in ("FINISHED", "KILLED")]
    assert not others, (others, lines[-12:])  # nothing RUNNING, nothing FAILED; what ended otherwise, and why
    assert max(r.info.start_time for r in children) <= sent * 1000 + 200  # no job started after the signal
    assert len(children) < 40


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_ctrl_c_while_a_job_logs_its_model(launcher: str, tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    """The signal right after a job's training line: the job is logging its results and its pt2 model."""
    code, lines, sent = _interrupt(tmp_path, cli_env, [*MODEL, JOBS, f"hydra/launcher={launcher}"], signal.SIGINT,
                                   "trained ")
    _check(tracking_uri, code, lines, sent, signal.SIGINT)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id],
                              filter_string="attributes.status = 'KILLED'")
    assert any("mlflow.parentRunId" in r.data.tags for r in runs)  # the job that was logging ended KILLED


@pytest.mark.parametrize("launcher,sig", [("basic", signal.SIGTERM), ("joblib", signal.SIGTERM),
                                          ("basic", signal.SIGINT)])
def test_a_signal_between_or_during_rule_jobs(launcher: str, sig: signal.Signals, tmp_path: Path, cli_env: dict,
                                              tracking_uri: str) -> None:
    code, lines, sent = _interrupt(tmp_path, cli_env, [*RULE, JOBS, f"hydra/launcher={launcher}"], sig,
                                   "val_sharpe_ratio = ", wait_s=1.0)  # a job has finished: others run or follow
    _check(tracking_uri, code, lines, sent, sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_a_batch_of_rule_configurations(sig: signal.Signals, tmp_path: Path, cli_env: dict,
                                                        tracking_uri: str) -> None:
    code, lines, sent = _interrupt(tmp_path, cli_env, [*RULE, JOBS, "hydra/launcher=batch", "hydra.launcher.chunk=4",
                                                       "hydra.launcher.writer=1"],  # its runs written by a process
                                   sig, "configurations done in", wait_s=0.3)  # a chunk is logged: the next runs
    _check(tracking_uri, code, lines, sent, sig)


def test_sigterm_while_a_model_trains(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    code, lines, sent = _interrupt(tmp_path, cli_env, [*MODEL, "trainer.epochs=30", "trainer.patience=30",
                                                       "data.n_bars=3000", JOBS], signal.SIGTERM, "trained ", 0.3)
    _check(tracking_uri, code, lines, sent, signal.SIGTERM)


# The real CLI, with a signal sent at one exact moment (``when``: a profile hook's test on a called function's frame,
# true once). There a stop raised at once used to be printed with a traceback, not the one line:
# - while Hydra opens a packaged config file (its own hydra/config.yaml) to compose a basic sweep's second job, the
#   first one done: its reader closes that file in a ``finally`` that an interrupt inside ``open`` leaves unbound,
#   and the UnboundLocalError hid the stop (Hydra's traceback, exit 1; 33 of 400 stops at random moments of a
#   composition ended so, measured in one process);
# - in tqdm's ``__del__``, as the training's bar is freed: Python printed "Exception ignored in" and its traceback.
SIGNAL_AT_A_MOMENT = """
import os, runpy, signal, sys

jobs = 0

def hydra_opens_the_second_jobs_config(frame):
    global jobs
    caller = frame.f_back
    if frame.f_code.co_name == "load_sweep_config" and caller.f_code.co_filename.endswith("basic_launcher.py"):
        jobs += 1
    return jobs >= 2 and frame.f_code.co_name == "open" and caller.f_code.co_name == "_read_config"

def a_training_bar_is_freed(frame):
    return frame.f_code.co_name == "__del__" and frame.f_globals["__name__"] == "tqdm.std"

def signal_when(frame, event, arg):
    if event == "call" and WHEN(frame):
        sys.setprofile(None)
        os.kill(os.getpid(), SIGNAL)

WHEN, SIGNAL = globals()[sys.argv[1]], signal.Signals[sys.argv[2]]
sys.setprofile(signal_when)
sys.argv[:3] = ["runner"]
runpy.run_module("runner", run_name="__main__", alter_sys=True)
"""


def _signal_at_a_moment(tmp_path: Path, env: dict, when: str, sig: signal.Signals, args: list[str]) -> tuple[int,
                                                                                                          list[str]]:
    result = subprocess.run([sys.executable, "-c", SIGNAL_AT_A_MOMENT, when, sig.name, *args], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    return result.returncode, (result.stdout + result.stderr).splitlines()


def test_sigterm_while_hydra_opens_the_next_jobs_config(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    args = ["-m", "+strategy=momentum", *RULE, "strategy.lookback=2,3,4", "hydra/launcher=basic"]
    code, lines = _signal_at_a_moment(tmp_path, cli_env, "hydra_opens_the_second_jobs_config", signal.SIGTERM, args)
    _check(tracking_uri, code, lines, time.time(), signal.SIGTERM)
    assert any("val_sharpe_ratio = " in line for line in lines)  # the first job ran; none started after the stop
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    assert len(runs) == 2, [(r.info.run_name, r.info.status) for r in runs]  # the parent and the first job


def test_ctrl_c_as_a_trainings_progress_bar_is_freed(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    args = ["-m", "+strategy=momentum", *MODEL, "strategy.lookback=2,3,4", "hydra/launcher=basic"]
    code, lines = _signal_at_a_moment(tmp_path, cli_env, "a_training_bar_is_freed", signal.SIGINT, args)
    _check(tracking_uri, code, lines, time.time(), signal.SIGINT)
    assert any(line.startswith("trained ") for line in lines)  # the first job trained; none started after the stop
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"], [(r.info.run_name, r.info.status) for r in runs]
