"""Sweeps: a parent MLflow run per ``-m`` sweep, one child run per job, and the winner at the end.

Hydra calls ``on_multirun_end`` only when no job raised, and a ``sys.exit`` inside a job ends the whole
sweep, so jobs never raise for a bad config or a failed run: they end their child run FAILED, record the
error and return NaN. The parent process then reads every outcome back from MLflow. An exception inside
a callback is only a warning to Hydra, so the callbacks exit non-zero themselves when they cannot work.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.cli import USER_ERRORS, run_tags, tracking_uri_for

PARENT_FILE = ".mlflow_sweep.json"


def _sweep_state(sweep_dir: str | Path) -> dict[str, str]:
    path = Path(sweep_dir) / PARENT_FILE
    if not path.is_file():
        raise LookupError(f"no sweep parent run recorded in {path}: is runner.sweep.SweepCallback configured "
                          "under hydra.callbacks (conf/config.yaml)?")
    return json.loads(path.read_text())


def _finished_run_with_hash(logger: Any, digest: str) -> Any:
    runs = logger.client.search_runs([logger.experiment_id], max_results=1,
                                     filter_string=f"tags.config_hash = '{digest}' and attributes.status = 'FINISHED'")
    return runs[0] if runs else None


def _job_threads(hydra_cfg: Any) -> int | None:
    """Torch and BLAS threads for a job that runs beside others (``hydra/launcher=joblib``): the cores
    shared among the jobs running at once, in the launching process and the workers alike. Jobs each using
    one thread per core oversubscribe the CPU: two 20-job model=none sweeps side by side took 0.71-0.79 s
    per job with numpy's default BLAS threads, 0.52-0.64 s with OPENBLAS_NUM_THREADS=1 (0.42 s alone)."""
    from runner.launcher import concurrent_jobs

    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=None)
    if n_jobs is None:
        return None
    cores = os.cpu_count() or 1
    at_once = min(concurrent_jobs(n_jobs), cores)
    return max(1, cores // at_once) if at_once > 1 else None


def run_job(cfg: DictConfig) -> float:
    """One sweep job as a child run; never raises for a failed experiment.

    Returns the selection metric for Hydra's sweepers (Optuna optimises it); a failed job or a NaN metric
    returns the worst value for the mode (-inf when maximising), since Optuna refuses NaN objectives.
    """
    value = _run_job(cfg)
    if math.isfinite(value):
        return value
    return -math.inf if str(cfg.selection.mode) == "max" else math.inf


def _run_job(cfg: DictConfig) -> float:
    from runner.experiment import execute, prepare
    from runner.lifecycle import tracked_run
    from runner.logger import MLflowLogger
    from runner.params import config_to_container
    from runner.run_logging import RunExtras, log_run_start

    hydra_cfg = HydraConfig.get()
    state = _sweep_state(hydra_cfg.sweep.dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = MLflowLogger(state["experiment_name"], state["tracking_uri"])
    tags = run_tags(cfg, resolved)
    tags.update({"sweep_id": state["parent_run_id"], "sweep_name": state["sweep_name"],
                 "job_number": str(hydra_cfg.job.num)})
    run_name = f"{state['sweep_name']}-{hydra_cfg.job.num}"
    if resolved.get("resume", True):
        previous = _finished_run_with_hash(logger, tags["config_hash"])
        if previous is not None:  # a light child that points at it, so this sweep's winner still sees it
            pointer = {k: v for k, v in tags.items() if k != "config_hash"}  # never found as a "previous" run
            logger.start_run(run_name, tags={**pointer, "resumed_from": previous.info.run_id},
                             parent_run_id=state["parent_run_id"])
            logger.end_run("FINISHED")
            print(f"[{run_name}] skipped: this config already has FINISHED run {previous.info.run_id}")
            return float(previous.data.metrics.get(resolved["selection"]["metric"], math.nan))
    logger.start_run(run_name, tags=tags, parent_run_id=state["parent_run_id"])
    try:
        with tracked_run(logger):
            extras = RunExtras(config_to_container(cfg), Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir)
            log_run_start(logger, extras)  # a job that fails validation still shows its config
            prepared = prepare(resolved)
            prepared.torch_threads = _job_threads(hydra_cfg)
            if prepared.torch_threads:  # numpy's BLAS too: its idle threads spin and slow the other jobs
                from threadpoolctl import threadpool_limits

                threadpool_limits(limits=prepared.torch_threads, user_api="blas")
            outcome = execute(prepared, logger, extras)
    except KeyboardInterrupt:  # Ctrl-C/SIGTERM stops the whole sweep: its parent ends KILLED too
        logger.client.set_terminated(state["parent_run_id"], "KILLED")
        raise
    except USER_ERRORS as error:
        print(f"[{run_name}] error: {error}", file=sys.stderr)
        return math.nan
    except Exception:  # noqa: BLE001 - the run is FAILED with the traceback logged; the sweep goes on
        print(f"[{run_name}] failed:\n{traceback.format_exc()}", file=sys.stderr)
        return math.nan
    print(f"[{run_name}] {resolved['selection']['metric']} = {outcome.selection_value:.4f}")
    return outcome.selection_value


def end_parent_after_error(sweep_dir: str | Path, error: BaseException) -> None:
    """A sweep that stops with an exception (a job config that cannot be composed, Ctrl-C) ends its parent
    run FAILED or KILLED instead of leaving it RUNNING: Hydra skips ``on_multirun_end`` then."""
    from runner.logger import MLflowLogger

    try:
        state = _sweep_state(sweep_dir)
        logger = MLflowLogger(state["experiment_name"], state["tracking_uri"])
        if logger.client.get_run(state["parent_run_id"]).info.status == "RUNNING":
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            logger.client.set_tag(state["parent_run_id"], "error", f"{type(error).__name__}: {error}"[:5000])
            logger.client.set_terminated(state["parent_run_id"], status)
    except Exception as problem:  # noqa: BLE001 - the original error is what the user must see
        print(f"warning: the sweep's parent run could not be ended: {problem}", file=sys.stderr)


class SweepCallback(Callback):
    """Creates the store, experiment and parent run before any job; reports the winner at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start(config)
        except Exception as error:  # noqa: BLE001 - Hydra would only warn and run jobs without a parent
            print(f"error: the sweep could not start: {error}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.launcher import stop_workers

        stop_workers()  # all jobs are done: the workers exit while the winner is reported
        try:
            failed = self._finish(config)
        except Exception as error:  # noqa: BLE001
            print(f"error: the sweep's winner could not be reported: {error}", file=sys.stderr)
            sys.exit(1)
        if failed:
            print(f"error: {len(failed)} job(s) failed: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        from runner.launcher import warm_workers

        warm_workers(config)  # first: their imports overlap this process's own (mlflow, ~2.5 s)
        from runner.health import check_tracking_server
        from runner.logger import MLflowLogger

        uri = tracking_uri_for({"tracking": OmegaConf.to_container(config.tracking, resolve=True)})
        check_tracking_server(uri)
        logger = MLflowLogger(str(config.experiment_name), uri)  # creates the schema once, here
        name = config.get("sweep_name") or datetime.now().strftime("sweep_%Y%m%d_%H%M%S")
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
        run = logger.client.create_run(logger.experiment_id, run_name=name, tags={
            "runner.role": "sweep_parent", "sweep_name": name, "overrides": overrides, "argv": " ".join(sys.argv),
            "sweep_dir": str(sweep_dir), "runner.pid": str(os.getpid())})
        state = {"parent_run_id": run.info.run_id, "sweep_name": name, "tracking_uri": uri,
                 "experiment_name": str(config.experiment_name), "experiment_id": logger.experiment_id,
                 "metric": str(config.selection.metric), "mode": str(config.selection.mode)}
        (sweep_dir / PARENT_FILE).write_text(json.dumps(state))
        logger.client.set_tag(run.info.run_id, "sweep_id", run.info.run_id)
        print(f"sweep {name}: parent run {run.info.run_id}")

    def _finish(self, config: DictConfig) -> list[str]:
        from runner.sweep_report import report_sweep

        return report_sweep(Path(config.hydra.sweep.dir), _sweep_state(config.hydra.sweep.dir))

