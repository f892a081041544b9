"""Sweeps: a parent MLflow run per ``-m`` sweep, one child run per job, and the winner at the end.

Hydra calls ``on_multirun_end`` only when no job raised, and a ``sys.exit`` inside a job ends the whole
sweep, so jobs never raise for a bad config or a failed run: they end their child run FAILED, record the
error and return the worst value. The parent process then reads every outcome back from MLflow. An
exception inside a callback is only a warning to Hydra, so the callbacks exit non-zero themselves when
they cannot work; a sweep stopped by an exception (a job config that cannot be composed, Ctrl-C) has its
parent ended by ``end_active_sweep``, which ``python -m runner`` calls around Hydra's entry point.

Jobs find their parent through a state file in the sweep's own folder, or, on Ray (``runner.sweeps.cluster``), in
their environment, wherever they run. The folder is unique per launch by default; a sweep holds a lock on it
while it runs, so a second sweep given the same folder refuses to start instead of mixing its runs with the
first one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError, NotFoundError, UserError
from runner.pipeline import ServerLost, tracking_uri_for

if TYPE_CHECKING:
    import pandas as pd
    from filelock import FileLock

    from runner.tracking.local_record import RunRecord
    from runner.tracking.logger import MLflowLogger

STATE_FILE = ".mlflow_sweep.json"
LOCK_FILE = ".mlflow_sweep.lock"
_active: dict[str, Any] = {}  # the sweep this process launched: state, folder lock, rows computed here, worker


def remember_segment_rows(run_id: str, rows: pd.DataFrame) -> None:
    """A configuration's selection-segment rows (``runner.sweeps.trials.segment_rows``), computed in this process by
    the batch launcher, for its sweep's end: 400 of them read back from their logged tables took 1.4 s."""
    _active.setdefault("segment_rows", {})[run_id] = rows


def sweep_state(sweep_dir: str | Path) -> dict[str, str]:
    from runner.sweeps.cluster import STATE_ENV

    if os.environ.get(STATE_ENV):  # a Ray job: given by the sweep, on any machine
        return json.loads(os.environ[STATE_ENV])
    path = Path(sweep_dir) / STATE_FILE
    if not path.is_file():
        raise NotFoundError(f"no sweep parent run recorded in {path}: is runner.sweeps.launch.SweepCallback configured "
                          "under hydra.callbacks (conf/config.yaml)?")
    return json.loads(path.read_text())


def parent_record(state: dict[str, Any]) -> RunRecord:
    """The sweep parent's local record, in the sweep's folder (the children's are in their job folders)."""
    from runner.tracking.local_record import RECORD_DIR, RunRecord

    return RunRecord(Path(state["sweep_dir"], RECORD_DIR))


def default_sweep_name(sweep_dir: Path) -> str:
    """``sweep_YYYYmmdd_HHMMSS`` from the sweep folder's own time (``outputs/multirun/<date>/<time>_<id>``, as
    conf/config.yaml names it), so that the name and the folder agree; the current time for other folders."""
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})/(\d{2})-(\d{2})-(\d{2})(?:_|$)",
                     f"{sweep_dir.parent.name}/{sweep_dir.name}")
    return "sweep_{}{}{}_{}{}{}".format(*match.groups()) if match else datetime.now().strftime("sweep_%Y%m%d_%H%M%S")


def end_active_sweep(error: BaseException) -> str | None:
    """A sweep stopped by an exception ends its parent run FAILED (KILLED for a signal) instead of leaving it
    RUNNING, and its children still RUNNING likewise: Hydra skips ``on_multirun_end`` then. Hydra turns an error
    into ``sys.exit(1)`` raised while handling it, so the error itself is the exit's ``__context__``. Returns
    what it ended, for the one line a stopped sweep prints (None: no sweep was running)."""
    state = _active.pop("state", None)
    lock = _active.pop("lock", None)
    _active.pop("segment_rows", None)
    worker = _active.pop("bootstrap_worker", None)
    if worker is not None:
        worker.close()
    if _active.pop("ray", False):  # first: Ray stops the jobs still running, so none can outlive the sweep
        from runner.sweeps.cluster import disconnect

        disconnect()
    if state is None:
        return None
    cause = error.__context__ if isinstance(error, SystemExit) and error.__context__ is not None else error
    if isinstance(error, SystemExit) and error.code in (0, None):
        return None
    try:
        from runner.tracking.local_record import server_lost
        from runner.tracking.logger import MLflowLogger

        status = "KILLED" if isinstance(cause, KeyboardInterrupt) else "FAILED"
        if server_lost(state["tracking_uri"]):  # only the record can be ended now
            parent_record(state).finish(status)
            return f"sweep {state['sweep_name']}'s record ended {status} (the tracking server was lost)"
        logger = MLflowLogger(state["experiment_name"], state["tracking_uri"])
        import mlflow

        while mlflow.active_run() is not None:  # a job stopped inside MLflow's own end_run: MLflow's exit hook
            mlflow.end_run(status)  # would otherwise end that run FINISHED after this one ended it KILLED
        from runner.tracking.lifecycle import end_running_children

        stopped = end_running_children(logger.client, logger.experiment_id, state["parent_run_id"], status,
                                       f"the sweep stopped: {type(cause).__name__}: {cause}")
        if stopped and not isinstance(cause, KeyboardInterrupt):
            print(f"ended {status}: {', '.join(stopped)} (stopped with the sweep)", file=sys.stderr)
        if logger.client.get_run(state["parent_run_id"]).info.status == "RUNNING":
            parent_record(state).finish(status)
            logger.client.set_tag(state["parent_run_id"], "error", f"{type(cause).__name__}: {cause}"[:5000])
            logger.client.set_terminated(state["parent_run_id"], status)
        killed = [r.info.run_name for r in logger.client.search_runs([logger.experiment_id], filter_string=(
            f"tags.mlflow.parentRunId = '{state['parent_run_id']}' and attributes.status = '{status}'"))]
        running = f" and its running job(s) ({', '.join(killed)})" if killed else ""
        return f"sweep {state['sweep_name']}'s parent run{running} ended {status}"
    except Exception as problem:  # noqa: BLE001 - the original error is what the user must see
        print(f"warning: the sweep's parent run could not be ended: {problem}", file=sys.stderr)
        return None
    finally:
        if lock is not None:
            lock.release()


def name_lock(tracking_uri: str, experiment_id: str, sweep_name: str) -> FileLock:
    """A lock on this machine for one sweep name of one experiment and store, held while a launch checks that
    the name is free and creates its parent: two launches at once cannot both pass the check. (Launches from
    two machines against one server are not serialised by it: the check alone stands there.)"""
    from filelock import FileLock

    key = hashlib.sha256(f"{tracking_uri}|{experiment_id}|{sweep_name}".encode()).hexdigest()[:16]
    return FileLock(str(Path(tempfile.gettempdir()) / f"runner-sweep-name-{key}.lock"), timeout=60)


def refuse_a_running_name(logger: MLflowLogger, sweep_name: str) -> None:
    """A sweep name whose parent is RUNNING with a live process is not launched again: one line naming it."""
    from runner.tracking.queries import running_sweep_parents

    running = running_sweep_parents(logger.client, logger.experiment_id, sweep_name)
    if running:
        parent = running[0]
        tags = parent.data.tags
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(parent.info.start_time / 1000))
        raise ConfigError(f"sweep_name={sweep_name!r} is running already: parent run {parent.info.run_id} (pid "
                          f"{tags.get('runner.pid', '?')} on {tags.get('runner.host', '?')}, started {started}); "
                          f"wait for it and launch again to resume it (its FINISHED configs are skipped), or give "
                          "this launch another name: sweep_name=NEW_NAME.")


def _remove_if_empty(sweep_dir: Path) -> None:
    """A launch that stopped before its parent existed leaves no folder behind (its lock file only)."""
    with contextlib.suppress(OSError):
        (sweep_dir / LOCK_FILE).unlink(missing_ok=True)
        sweep_dir.rmdir()


class SweepCallback(Callback):
    """Creates the store, experiment and parent run before any job; reports the winner at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._start(config)
        except UserError as error:  # Hydra would only warn and run jobs without a parent
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except Exception:  # noqa: BLE001 - a bug: its traceback, and no job runs without a parent
            print(f"error: the sweep could not start:\n{traceback.format_exc()}", file=sys.stderr)
            sys.exit(1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.sweeps.winner import report_sweep
        from runner.tracking.lifecycle import check_stop
        from runner.tracking.local_record import is_unreachable, server_lost

        check_stop()  # a stop swallowed after the last job's run (in a finaliser): the sweep ends KILLED, not here
        state, lock, known = _active.pop("state"), _active.pop("lock"), _active.pop("segment_rows", {})
        if _active.pop("ray", False):
            from runner.sweeps.cluster import disconnect

            disconnect()
        worker = _active.pop("bootstrap_worker", None)
        try:
            if server_lost(state["tracking_uri"]):
                raise ServerLost(state["sweep_dir"], state["tracking_uri"])
            failed = report_sweep(Path(config.hydra.sweep.dir), state, known, worker)
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
            if worker is not None:
                worker.close()
            lock.release()
        if failed:
            print(f"error: {len(failed)} job(s) failed or lost a process: {', '.join(failed)}", file=sys.stderr)
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        from filelock import FileLock, Timeout

        from runner.engine import ENGINE_VERSION
        from runner.sweeps.cluster import check_shared_store, connect, is_ray, job_env
        from runner.sweeps.progress import fixed_overrides, planned_jobs
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
            raise NotFoundError(f"hydra.sweep.dir={sweep_dir} is in use by another running sweep; give this one "
                              "its own folder (or leave hydra.sweep.dir at its default, unique per launch).") from None
        uri = tracking_uri_for(OmegaConf.to_container(config.tracking, resolve=True))
        try:
            check_tracking_server(uri)
            logger = MLflowLogger(str(config.experiment_name), uri)  # creates the schema once, here
            on_ray = is_ray(config.hydra.launcher)
            if "joblib" in str(OmegaConf.select(config, "hydra.launcher._target_", default="")):
                # Workers stopped with the sweep leave semaphores for the resource tracker process (started by
                # the workers' pool, inheriting this) to clean, which it does, with a warning on stderr per sweep.
                os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning:multiprocessing.resource_tracker")
            if on_ray:
                check_shared_store(config.hydra.launcher, uri,
                                   logger.client.get_experiment(logger.experiment_id).artifact_location)
            name = config.get("sweep_name") or default_sweep_name(sweep_dir)
            override_list = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]
            overrides = " ".join(override_list)
            with name_lock(uri, logger.experiment_id, name):  # one launch at a time may check and create
                refuse_a_running_name(logger, name)
                run = logger.client.create_run(logger.experiment_id, run_name=name, tags={
                    "runner.role": "sweep_parent", "sweep_name": name, "overrides": overrides,
                    "argv": " ".join(sys.argv), "sweep_dir": str(sweep_dir.absolute()),
                    "runner.host": socket.gethostname(), "runner.pid": str(os.getpid()),
                    ENGINE_VERSION_TAG: str(ENGINE_VERSION)})
        except BaseException:
            lock.release()
            _remove_if_empty(sweep_dir)
            raise
        state = {"parent_run_id": run.info.run_id, "sweep_name": name, "tracking_uri": uri,
                 "experiment_name": str(config.experiment_name), "experiment_id": logger.experiment_id,
                 "metric": str(config.selection.metric), "mode": str(config.selection.mode),
                 "sweep_dir": str(sweep_dir.absolute()), "launch_dir": os.getcwd(), "pid": os.getpid(),
                 "reuse_runs": bool(config.reuse_runs),
                 "planned_jobs": planned_jobs(override_list, config.hydra.sweeper), "started": time.time(),
                 "fixed_overrides": fixed_overrides(override_list)}
        (sweep_dir / STATE_FILE).write_text(json.dumps(state))
        from runner.tracking.local_record import keeps_record

        if keeps_record(uri):
            parent_record(state).start(experiment_name=state["experiment_name"], tracking_uri=uri, run_name=name,
                                       run_id=run.info.run_id, parent_run_id=None, parent_record=None)
            parent_record(state).add("tags.json", {**run.data.tags, "sweep_id": run.info.run_id})
        _active.update(state=state, lock=lock)
        from runner.sweeps.bootstrap_worker import BootstrapWorker

        _active["bootstrap_worker"] = BootstrapWorker.start()  # imports arch while the jobs run, for the end
        logger.client.set_tag(run.info.run_id, "sweep_id", run.info.run_id)
        if on_ray:  # the jobs' connection, before the launcher makes its own
            connect(config.hydra.launcher, job_env(state))
            _active["ray"] = True
        print(f"sweep {name}: parent run {run.info.run_id}")
        if config.reuse_runs:
            print(f"reuse_runs=true: a configuration with a FINISHED run anywhere in experiment "
                  f"{config.experiment_name!r} (another sweep's, or a single run's) is not run again; that run "
                  "stands in for it and counts as a trial")
