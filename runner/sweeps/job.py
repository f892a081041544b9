"""One sweep job: its child run (or a pointer to the run that already did its config), its value for Hydra's
sweeper, and how many threads it may use beside the other jobs.

A job runs through the same ``runner.pipeline.run_tracked`` as a single run. Jobs never raise for a bad config or a
failed run (``runner.sweeps.launch`` says why): they end their child run FAILED, record the error (a bug's
traceback too) and return the worst value for the mode.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.errors import UserError
from runner.pipeline import ServerLost, run_folder, run_tags, run_title, run_tracked, task_overrides
from runner.sweeps.launch import sweep_state

if TYPE_CHECKING:
    from mlflow.entities import Run

    from runner.tracking.logger import MLflowLogger


def job_threads(launcher: Any) -> int | None:
    """Torch and BLAS threads for a job that runs beside others: the CPUs Ray gave it (``hydra/launcher=ray``),
    or the cores shared among the jobs that run at once (``hydra/launcher=joblib``'s ``n_jobs``; -1 is one per
    core)."""
    from runner.sweeps.cluster import is_ray, job_cpus

    if is_ray(launcher):
        return job_cpus()
    n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
    if n_jobs is None:
        return None
    cores = os.cpu_count() or 1
    at_once = min(cores, int(n_jobs) if int(n_jobs) > 0 else cores + 1 + int(n_jobs))
    return max(1, cores // at_once) if at_once > 1 else None


def rule_on_holdout(cfg: DictConfig) -> bool:
    """A rule (no model) judged on one holdout backtest (``runner.tracking.recorder.drawn_later``, on a job's
    config): its figures can be drawn from its logged tables later, and a batch computes it in one engine pass."""
    from runner.tracking.recorder import drawn_later

    return drawn_later({"model._target_": str(OmegaConf.select(cfg, "model._target_")),
                        "evaluation._target_": str(OmegaConf.select(cfg, "evaluation._target_"))})


def worst(mode: str) -> float:
    """What a failed job returns: Optuna refuses NaN objectives, so the worst value for the mode."""
    return -math.inf if mode == "max" else math.inf


def run_job(cfg: DictConfig) -> float:
    """One sweep job as a child run; returns the selection metric, or the worst value for the mode when
    the job failed or its metric is NaN (Hydra's sweepers, Optuna's included, optimise this value)."""
    from runner.tracking.local_record import server_lost

    hydra_cfg = HydraConfig.get()
    state = sweep_state(hydra_cfg.sweep.dir)
    from runner.sweeps.cluster import enter_launch_dir, is_ray

    if is_ray(hydra_cfg.launcher):
        enter_launch_dir(state)
    run_name = f"{state['sweep_name']}-{hydra_cfg.job.num}"  # the job's label in the console and reports
    if server_lost(state["tracking_uri"]):  # a joblib worker that lost it in an earlier job
        print(f"[{run_name}] not run: the tracking server was lost", file=sys.stderr)
        return worst(state["mode"])
    rule = rule_on_holdout(cfg)
    value = _tracked_job(cfg, state, run_name, rule)
    if rule:
        settle()
    from runner.sweeps.progress import job_done

    print(f"[{run_name}] {job_done(hydra_cfg.sweep.dir, state.get('planned_jobs'), state['started'])}")
    if server_lost(state["tracking_uri"]) and os.getpid() == state["pid"]:  # stop launching: Hydra ends the sweep
        raise ServerLost(hydra_cfg.sweep.dir, state["tracking_uri"])
    return value if math.isfinite(value) else worst(state["mode"])


@functools.cache
def settle() -> None:
    """Once per process, after its first rule job (its imports done): the objects alive then leave the cyclic
    garbage collector's generations (``gc.freeze``), so that a full collection walks only what later jobs leave, not
    the ~650k objects of MLflow, SQLAlchemy and pandas (0.2-0.3 s each; a 20-job rule sweep spent 0.55 s in 2 after
    its first job, measured). Without a collection first (another 0.2 s): the ~9,400 objects the first job left in
    reference cycles stay, once. Not after a model's job, whose leftovers may hold tensors; a batch gains nothing
    from it (its end reads every configuration's run: collections come more often, each as long)."""
    gc.freeze()


def override_key(override: str) -> str:
    """``key`` of ``key=value``, ``+key=value`` or ``~key``."""
    return override.lstrip("+~").partition("=")[0]


def job_identity(resolved: dict[str, Any], state: dict[str, Any], hydra: Mapping[str, Any] | None = None,
                 ) -> tuple[str, str, dict[str, str]]:
    """A job's label in the console (``<sweep name>-<job number>``), its run's name (what it is: the swept values)
    and its tags. ``hydra``: the job's Hydra node; None: this process's."""
    node = hydra if hydra is not None else HydraConfig.get()
    fixed = {override_key(o) for o in state.get("fixed_overrides", ())}  # by key: the sweeper re-quotes values
    title = run_title([o for o in task_overrides(hydra) if override_key(o) not in fixed], hydra)
    number = str(node["job"]["num"])
    tags = {**run_tags(resolved, hydra), "sweep_id": state["parent_run_id"], "sweep_name": state["sweep_name"],
            "job_number": number}
    return f"{state['sweep_name']}-{number}", title, tags


def finished_scope(state: dict[str, Any]) -> str:
    """The FINISHED runs a resumed job may stand on: its own sweep name's, or with ``reuse_runs`` the experiment's
    (of the current engine version: ``runner.tracking.queries.version_filter``)."""
    return "attributes.status = 'FINISHED'" + ("" if state.get("reuse_runs") else
                                               f" and tags.sweep_name = '{state['sweep_name']}'")


def _resumed(logger: MLflowLogger, tags: dict[str, str], run_name: str, title: str, state: dict[str, str],
             metric: str) -> float | None:
    """If this sweep already finished this config, a light child that points at that run, and its value."""
    from runner.tracking.queries import version_filter

    runs = logger.client.search_runs([logger.experiment_id], max_results=1, filter_string=version_filter(
        f"tags.config_hash = '{tags['config_hash']}' and {finished_scope(state)}"))
    if not runs:  # none, or only runs of an older engine version, whose metrics mean something else
        return None
    return point_to(logger, runs[0], tags, run_name, title, state, metric)


def point_to(logger: MLflowLogger, previous: Run, tags: dict[str, str], run_name: str, title: str,
             state: dict[str, Any], metric: str, say: bool = True) -> float:
    """A light child that points at the FINISHED run ``previous`` of the same config, and that run's value (``say``:
    one console line about it; a batch counts them in its chunk's line instead)."""
    pointer = {k: v for k, v in tags.items() if k != "config_hash"}  # never found as a "previous" run
    logger.start_run(title, tags={**pointer, "resumed_from": previous.info.run_id},
                     parent_run_id=state["parent_run_id"])
    logger.end_run("FINISHED")
    if say:
        print(f"[{run_name}] skipped: this config already has FINISHED run {previous.info.run_id}")
    return float(previous.data.metrics.get(metric, math.nan))


def _tracked_job(cfg: DictConfig, state: dict[str, str], run_name: str, rule: bool) -> float:
    from mlflow.exceptions import MlflowException

    from runner.sweeps.cluster import is_ray
    from runner.tracking.lifecycle import close_lost_attempts
    from runner.tracking.local_record import RECORD_DIR, is_unreachable, mark_server_lost, run_logger

    hydra_cfg = HydraConfig.get()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    metric = resolved["selection"]["metric"]
    _, title, tags = job_identity(resolved, state)
    try:
        logger = run_logger(state["experiment_name"], state["tracking_uri"], run_folder().absolute() / RECORD_DIR,
                            Path(state["sweep_dir"], RECORD_DIR))
        resumed = (_resumed(logger, tags, run_name, title, state, metric)
                   if resolved["resume"] or state.get("reuse_runs") else None)
    except MlflowException as error:  # the server went away before this job could start
        if not is_unreachable(error):
            raise
        mark_server_lost(state["tracking_uri"], error)
        return math.nan
    if resumed is not None:
        return resumed
    # A rule's job takes a fraction of a second: its params, tags and metrics go in one batch and its files in one
    # upload at its end (a model's are logged as it goes, so that a long training shows its config meanwhile). Its
    # figures and its tables' JSON views (26 ms of the ~105 ms a job spent logging) are made from its logged
    # Parquet tables, for the sweep's winner at the end (any run's later: python -m runner.report --figures RUN_ID);
    # a model's training curves are drawn as it trains.
    logger.defer_writes = rule
    if is_ray(hydra_cfg.launcher):
        from runner.sweeps.cluster import job_node

        tags["runner.ray_node"] = job_node() or ""  # which node of the cluster ran it
    run = logger.start_run(title, tags=tags, parent_run_id=state["parent_run_id"])
    lost: list[str] = []
    if is_ray(hydra_cfg.launcher):  # only Ray runs a job again within one sweep (its worker died)
        try:
            lost = close_lost_attempts(logger.client, logger.experiment_id, state["parent_run_id"],
                                       tags["job_number"], run)
        except MlflowException:  # the job itself goes on; its record keeps what the server cannot take now
            pass
    if lost:
        print(f"[{run_name}] running again: the process of its earlier attempt died (run {', '.join(lost)}, now "
              "FAILED)", file=sys.stderr)
    try:
        _, outcome = run_tracked(logger, cfg, threads=job_threads(hydra_cfg.launcher), figures=not rule,
                                 tables="parquet" if rule else "auto")
    except UserError as error:
        print(f"[{run_name}] error: {error}", file=sys.stderr)
        return math.nan
    except Exception:  # noqa: BLE001 - a bug: the run is FAILED with the traceback logged; the sweep goes on
        print(f"[{run_name}] failed:\n{traceback.format_exc()}", file=sys.stderr)
        return math.nan
    print(f"[{run_name}] {metric} = {outcome.selection_value:.4f}")
    return outcome.selection_value
