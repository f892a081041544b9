"""Sweeps: a parent MLflow run per ``-m`` sweep, one child run per job, and the winner at the end.

Hydra calls ``on_multirun_end`` only when no job raised, and a ``sys.exit`` inside a job ends the whole
sweep, so jobs never raise for a bad config or a failed run: they end their child run FAILED, record the
error and return the worst value. The parent process then reads every outcome back from MLflow. An
exception inside a callback is only a warning to Hydra, so the callbacks exit non-zero themselves when
they cannot work; a sweep stopped by an exception (a job config that cannot be composed, Ctrl-C) has its
parent ended by ``end_active_sweep``, which ``python -m runner`` calls around Hydra's entry point.

Jobs find their parent through a state file in the sweep's own folder. The folder is unique per launch
by default; a sweep holds a lock on it while it runs, so a second sweep given the same folder refuses to
start instead of mixing its runs with the first one's.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.task import USER_ERRORS, ServerLost, provenance, require_strategy, run_folder, run_tags, tracking_uri_for

STATE_FILE = ".mlflow_sweep.json"
LOCK_FILE = ".mlflow_sweep.lock"
_active: dict[str, Any] = {}  # the sweep this process launched: its state and its folder lock


def sweep_state(sweep_dir: str | Path) -> dict[str, str]:
    path = Path(sweep_dir) / STATE_FILE
    if not path.is_file():
        raise LookupError(f"no sweep parent run recorded in {path}: is runner.sweep.SweepCallback configured "
                          "under hydra.callbacks (conf/config.yaml)?")
    return json.loads(path.read_text())


def parent_record(state: dict[str, Any]) -> Any:
    """The sweep parent's local record, in the sweep's folder (the children's are in their job folders)."""
    from runner.tracking.record import RECORD_DIR, RunRecord

    return RunRecord(Path(state["sweep_dir"], RECORD_DIR))


def job_threads(launcher: Any) -> int | None:
    """Torch and BLAS threads for a job that runs beside others (``hydra/launcher=joblib``): the cores
    shared among the jobs that run at once (joblib's ``n_jobs``; -1 is one per core)."""
    n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
    if n_jobs is None:
        return None
    cores = os.cpu_count() or 1
    at_once = min(cores, int(n_jobs) if int(n_jobs) > 0 else cores + 1 + int(n_jobs))
    return max(1, cores // at_once) if at_once > 1 else None


def default_sweep_name(sweep_dir: Path) -> str:
    """``sweep_YYYYmmdd_HHMMSS`` from the sweep folder's own time (``outputs/multirun/<date>/<time>_<id>``, as
    conf/config.yaml names it), so that the name and the folder agree; the current time for other folders."""
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})/(\d{2})-(\d{2})-(\d{2})(?:_|$)",
                     f"{sweep_dir.parent.name}/{sweep_dir.name}")
    return "sweep_{}{}{}_{}{}{}".format(*match.groups()) if match else datetime.now().strftime("sweep_%Y%m%d_%H%M%S")


def worst(mode: str) -> float:
    """What a failed job returns: Optuna refuses NaN objectives, so the worst value for the mode."""
    return -math.inf if mode == "max" else math.inf


def run_job(cfg: DictConfig) -> float:
    """One sweep job as a child run; returns the selection metric, or the worst value for the mode when
    the job failed or its metric is NaN (Hydra's sweepers, Optuna's included, optimise this value)."""
    from runner.tracking.record import server_lost

    hydra_cfg = HydraConfig.get()
    state = sweep_state(hydra_cfg.sweep.dir)
    run_name = f"{state['sweep_name']}-{hydra_cfg.job.num}"
    if server_lost(state["tracking_uri"]):  # a joblib worker that lost it in an earlier job
        print(f"[{run_name}] not run: the tracking server was lost", file=sys.stderr)
        return worst(state["mode"])
    value = _tracked_job(cfg, state, run_name)
    from runner.progress import job_done

    print(f"[{run_name}] {job_done(hydra_cfg.sweep.dir, state.get('planned_jobs'), state['started'])}")
    if server_lost(state["tracking_uri"]) and os.getpid() == state["pid"]:  # stop launching: Hydra ends the sweep
        raise ServerLost(hydra_cfg.sweep.dir, state["tracking_uri"])
    return value if math.isfinite(value) else worst(state["mode"])


def _resumed(logger: Any, tags: dict[str, str], run_name: str, state: dict[str, str], metric: str) -> float | None:
    """If this sweep already finished this config, a light child that points at that run, and its value."""
    from runner.tracking.queries import version_filter

    scope = "" if state.get("reuse_runs") else f" and tags.sweep_name = '{state['sweep_name']}'"
    runs = logger.client.search_runs([logger.experiment_id], max_results=1, filter_string=version_filter(
        f"tags.config_hash = '{tags['config_hash']}' and attributes.status = 'FINISHED'{scope}"))
    if not runs:  # none, or only runs of an older engine version, whose metrics mean something else
        return None
    previous = runs[0]
    pointer = {k: v for k, v in tags.items() if k != "config_hash"}  # never found as a "previous" run
    logger.start_run(run_name, tags={**pointer, "resumed_from": previous.info.run_id},
                     parent_run_id=state["parent_run_id"])
    logger.end_run("FINISHED")
    print(f"[{run_name}] skipped: this config already has FINISHED run {previous.info.run_id}")
    return float(previous.data.metrics.get(metric, math.nan))


def _tracked_job(cfg: DictConfig, state: dict[str, str], run_name: str) -> float:
    from mlflow.exceptions import MlflowException

    from runner.experiment import execute, prepare
    from runner.tracking.lifecycle import tracked_run
    from runner.tracking.record import RECORD_DIR, is_unreachable, mark_server_lost, run_logger
    from runner.tracking.run_record import RunExtras, log_run_start

    hydra_cfg = HydraConfig.get()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    metric = resolved["selection"]["metric"]
    tags = {**run_tags(resolved), "sweep_id": state["parent_run_id"], "sweep_name": state["sweep_name"],
            "job_number": str(hydra_cfg.job.num)}
    try:
        logger = run_logger(state["experiment_name"], state["tracking_uri"], run_folder().absolute() / RECORD_DIR,
                            Path(state["sweep_dir"], RECORD_DIR))
        resumed = (_resumed(logger, tags, run_name, state, metric)
                   if resolved.get("resume", True) or state.get("reuse_runs") else None)
    except MlflowException as error:  # the server went away before this job could start
        if not is_unreachable(error):
            raise
        mark_server_lost(state["tracking_uri"], error)
        return math.nan
    if resumed is not None:
        return resumed
    logger.start_run(run_name, tags=tags, parent_run_id=state["parent_run_id"])
    try:
        with tracked_run(logger):
            redacted, hydra_files = provenance(cfg)
            log_run_start(logger, RunExtras(redacted, hydra_files))  # a job that fails validation still shows it
            require_strategy()
            prepared = prepare(resolved)
            prepared.torch_threads = job_threads(hydra_cfg.launcher)
            if prepared.torch_threads:  # numpy's BLAS too: its idle threads spin and slow the other jobs
                from threadpoolctl import threadpool_limits

                threadpool_limits(limits=prepared.torch_threads, user_api="blas")
            outcome = execute(prepared, logger, RunExtras(redacted, hydra_files))
    except USER_ERRORS as error:
        print(f"[{run_name}] error: {error}", file=sys.stderr)
        return math.nan
    except Exception:  # noqa: BLE001 - the run is FAILED with the traceback logged; the sweep goes on
        print(f"[{run_name}] failed:\n{traceback.format_exc()}", file=sys.stderr)
        return math.nan
    print(f"[{run_name}] {metric} = {outcome.selection_value:.4f}")
    return outcome.selection_value


def end_active_sweep(error: BaseException) -> None:
    """A sweep stopped by an exception ends its parent run FAILED (KILLED for Ctrl-C) instead of leaving it
    RUNNING: Hydra skips ``on_multirun_end`` then. Hydra turns an error into ``sys.exit(1)`` raised while
    handling it, so the error itself is the exit's ``__context__``."""
    state = _active.pop("state", None)
    lock = _active.pop("lock", None)
    if state is None:
        return
    cause = error.__context__ if isinstance(error, SystemExit) and error.__context__ is not None else error
    if isinstance(error, SystemExit) and error.code in (0, None):
        return
    try:
        from runner.tracking.logger import MLflowLogger
        from runner.tracking.record import server_lost

        status = "KILLED" if isinstance(cause, KeyboardInterrupt) else "FAILED"
        if server_lost(state["tracking_uri"]):  # only the record can be ended now
            parent_record(state).finish(status)
            return
        logger = MLflowLogger(state["experiment_name"], state["tracking_uri"])
        if logger.client.get_run(state["parent_run_id"]).info.status == "RUNNING":
            parent_record(state).finish(status)
            logger.client.set_tag(state["parent_run_id"], "error", f"{type(cause).__name__}: {cause}"[:5000])
            logger.client.set_terminated(state["parent_run_id"], status)
    except Exception as problem:  # noqa: BLE001 - the original error is what the user must see
        print(f"warning: the sweep's parent run could not be ended: {problem}", file=sys.stderr)
    finally:
        if lock is not None:
            lock.release()


class SweepCallback(Callback):
    """Creates the store, experiment and parent run before any job; reports the winner at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start(config)
        except Exception as error:  # noqa: BLE001 - Hydra would only warn and run jobs without a parent
            print(f"error: the sweep could not start: {error}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.tracking.record import is_unreachable, server_lost
        from runner.winner import report_sweep

        state, lock = _active.pop("state"), _active.pop("lock")
        try:
            if server_lost(state["tracking_uri"]):
                raise ServerLost(state["sweep_dir"], state["tracking_uri"])
            failed = report_sweep(Path(config.hydra.sweep.dir), state)
            parent_record(state).finish("FINISHED")
        except ServerLost:
            parent_record(state).finish("FAILED")
            raise
        except Exception as error:  # noqa: BLE001
            if is_unreachable(error):
                parent_record(state).finish("FAILED")
                raise ServerLost(state["sweep_dir"], state["tracking_uri"]) from None
            print(f"error: the sweep's winner could not be reported: {error}", file=sys.stderr)
            sys.exit(1)
        finally:
            lock.release()
        if failed:
            print(f"error: {len(failed)} job(s) failed: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        from filelock import FileLock, Timeout

        from runner.engine import ENGINE_VERSION
        from runner.progress import planned_jobs
        from runner.tracking.logger import MLflowLogger
        from runner.tracking.queries import ENGINE_VERSION_TAG
        from runner.tracking.store import check_tracking_server

        if "optuna" in str(config.hydra.sweeper.get("_target_", "")):  # its INFO lines: colour codes in logs
            import logging

            logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's import sets up alembic, at INFO
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(sweep_dir / LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise LookupError(f"hydra.sweep.dir={sweep_dir} is in use by another running sweep; give this one "
                              "its own folder (or leave hydra.sweep.dir at its default, unique per launch).") from None
        uri = tracking_uri_for(OmegaConf.to_container(config.tracking, resolve=True))
        try:
            check_tracking_server(uri)
            logger = MLflowLogger(str(config.experiment_name), uri)  # creates the schema once, here
            name = config.get("sweep_name") or default_sweep_name(sweep_dir)
            override_list = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]
            overrides = " ".join(override_list)
            run = logger.client.create_run(logger.experiment_id, run_name=name, tags={
                "runner.role": "sweep_parent", "sweep_name": name, "overrides": overrides, "argv": " ".join(sys.argv),
                "sweep_dir": str(sweep_dir.absolute()), "runner.host": socket.gethostname(),
                "runner.pid": str(os.getpid()), ENGINE_VERSION_TAG: str(ENGINE_VERSION)})
        except BaseException:
            lock.release()
            raise
        state = {"parent_run_id": run.info.run_id, "sweep_name": name, "tracking_uri": uri,
                 "experiment_name": str(config.experiment_name), "experiment_id": logger.experiment_id,
                 "metric": str(config.selection.metric), "mode": str(config.selection.mode),
                 "sweep_dir": str(sweep_dir.absolute()), "pid": os.getpid(), "reuse_runs": bool(config.reuse_runs),
                 "planned_jobs": planned_jobs(override_list, config.hydra.sweeper), "started": time.time()}
        (sweep_dir / STATE_FILE).write_text(json.dumps(state))
        from runner.tracking.record import keeps_record

        if keeps_record(uri):
            parent_record(state).start(experiment_name=state["experiment_name"], tracking_uri=uri, run_name=name,
                                       run_id=run.info.run_id, parent_run_id=None, parent_record=None)
            parent_record(state).add("tags.json", {**run.data.tags, "sweep_id": run.info.run_id})
        _active.update(state=state, lock=lock)
        logger.client.set_tag(run.info.run_id, "sweep_id", run.info.run_id)
        print(f"sweep {name}: parent run {run.info.run_id}")
        if config.reuse_runs:
            print(f"reuse_runs=true: a configuration with a FINISHED run anywhere in experiment "
                  f"{config.experiment_name!r} (another sweep's, or a single run's) is not run again; that run "
                  "stands in for it and counts as a trial")
