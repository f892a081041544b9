"""Parallel sweeps (``hydra/launcher=joblib``): the launching process runs jobs beside ``n_jobs - 1`` workers.

Hydra's joblib launcher, measured on 2 cores: each worker pays seconds of imports (mlflow, torch, ...) before
its first job while the launching process only waits, and every job's config is composed twice (to check
the batch, then again in the worker), so 20 short jobs took longer than the basic launcher. Here:

- ``n_jobs`` counts the launching process: ``n_jobs=2`` runs jobs in this process and in one loky worker,
  two at a time, as Hydra's launcher does with two workers;
- workers start, and import what a job needs, when the launcher is set up, so their imports overlap the
  sweep's own start (the parent run, checking the batch) and the jobs this process already runs;
- a worker receives the config composed here (pickled in ~1 ms) instead of composing it again (~0.17 s);
- this process keeps two jobs queued per worker, so a worker finishing a job never waits for this one;
- a job a worker could not run (the worker died, say) is run here, so no job is lost.
"""

from __future__ import annotations

import concurrent.futures as futures
import importlib
import logging
import os
from collections import deque
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

COMMON_IMPORTS = ["pandas", "mlflow", "matplotlib.figure", "matplotlib.backends.backend_agg", "runner.sweep",
                  "runner.experiment", "runner.run_logging"]
MODEL_IMPORTS = ["torch", "runner.training", "mlflow.pytorch", "torch.export"]
QUEUED_PER_WORKER = 2
_STARTED: list[Any] = []  # the executors start_workers made, for stop_workers
LAUNCHER = "hydra_plugins.runner_plugins.joblib_launcher.RunnerJoblibLauncher"
HYDRA_JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
# hydra-joblib-launcher's options (its schema still applies to conf/hydra/launcher/joblib.yaml) and defaults.
JOBLIB_DEFAULTS = {"backend": None, "prefer": "processes", "require": None, "verbose": 0, "timeout": None,
                   "pre_dispatch": "2*n_jobs", "batch_size": "auto", "temp_folder": None, "max_nbytes": None,
                   "mmap_mode": "r"}


def concurrent_jobs(n_jobs: int | None) -> int:
    """How many jobs run at once: ``n_jobs``, -1 (or less than 1) for one per core."""
    cores = os.cpu_count() or 1
    return cores if n_jobs is None or int(n_jobs) < 1 else int(n_jobs)


def imports_for(config: DictConfig) -> list[str]:
    """What a job of this sweep imports before its first step: torch only if a model is configured."""
    uses_model = OmegaConf.select(config, "model._target_", default=None) is not None
    return COMMON_IMPORTS + (MODEL_IMPORTS if uses_model else [])


def _import(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def start_workers(n_workers: int, modules: list[str]) -> Any:
    """loky's reusable executor with ``n_workers`` processes, each asked to import ``modules`` now."""
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=n_workers, timeout=600)
    if executor not in _STARTED:
        _STARTED.append(executor)
    for _ in range(n_workers):
        executor.submit(_import, modules)
    return executor


def warm_workers(config: DictConfig) -> Any:
    """Start the workers of a ``hydra/launcher=joblib`` sweep now (None for any other launcher).

    Hydra sets the launcher up only after ``on_multirun_start``; the sweep callback calls this first thing,
    and the launcher's own ``start_workers`` then finds the same (reusable) executor."""
    if OmegaConf.select(config, "hydra.launcher._target_", default="") != LAUNCHER:
        return None
    options = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    check_options({k: v for k, v in options.items() if k not in ("_target_", "n_jobs")})
    workers = concurrent_jobs(options.get("n_jobs")) - 1
    return start_workers(workers, imports_for(config)) if workers > 0 else None


def check_options(joblib_options: dict[str, Any]) -> None:
    """hydra-joblib-launcher's options other than n_jobs must keep their defaults: they mean nothing here."""
    changed = {k: v for k, v in joblib_options.items() if v != JOBLIB_DEFAULTS.get(k, v)}
    unknown = sorted(set(joblib_options) - set(JOBLIB_DEFAULTS))
    if changed or unknown:
        named = ", ".join(f"{k}={v}" for k, v in changed.items()) or ", ".join(unknown)
        raise ValueError(f"hydra.launcher: {named} is not supported by the runner's joblib launcher (only n_jobs "
                         f"is); for Hydra's own launcher add hydra.launcher._target_={HYDRA_JOBLIB}")


def stop_workers() -> None:
    """End the workers this process started, now rather than at interpreter exit (~1 s later)."""
    while _STARTED:
        _STARTED.pop().shutdown(wait=False, kill_workers=True)


def _run_in_worker(config: DictConfig, hydra_context: Any, task_function: Any,
                   singleton_state: dict[Any, Any]) -> JobReturn:
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def launch(launcher: Any, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    executor = launcher.executor
    workers = launcher.n_workers if executor is not None else 0
    log.info(f"Launching {len(job_overrides)} jobs: this process and {workers} worker process(es)")
    pending: deque[tuple[int, list[str]]] = deque(enumerate(job_overrides))
    results: dict[int, JobReturn] = {}
    running: dict[Any, tuple[int, DictConfig]] = {}
    singleton_state = Singleton.get_state()

    def compose(position: int, overrides: list[str]) -> DictConfig:
        number = initial_job_idx + position
        log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        job_config = context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.id = f"{job_config.hydra.job.name}_{number}"
            job_config.hydra.job.num = number
        return job_config

    def run_here(position: int, job_config: DictConfig) -> None:
        results[position] = run_job(hydra_context=context, task_function=launcher.task_function,
                                    config=job_config, job_dir_key="hydra.sweep.dir",
                                    job_subdir_key="hydra.sweep.subdir")
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)  # the job configured its own logging

    def collect(done: set[Any]) -> None:
        nonlocal executor
        for future in done:
            position, job_config = running.pop(future)
            try:
                results[position] = future.result()
            except Exception as error:  # noqa: BLE001 - the job itself never raises; its worker failed
                log.warning(f"a worker could not run job #{initial_job_idx + position} ({error!r}); running it here")
                if isinstance(error, futures.BrokenExecutor):
                    executor = None
                run_here(position, job_config)

    try:
        while pending or running:
            while executor is not None and pending and len(running) < QUEUED_PER_WORKER * workers:
                position, overrides = pending.popleft()
                job_config = compose(position, overrides)
                future = executor.submit(_run_in_worker, job_config, context, launcher.task_function,
                                         singleton_state)
                running[future] = (position, job_config)
            if pending:
                position, overrides = pending.popleft()
                run_here(position, compose(position, overrides))
            elif running:
                done, _ = futures.wait(list(running), return_when=futures.FIRST_COMPLETED)
                collect(done)
            collect({future for future in running if future.done()})
    except BaseException:
        for future in running:
            future.cancel()
        futures.wait(list(running), timeout=10)  # workers got the same Ctrl-C: let them end their runs
        if executor is not None:
            executor.shutdown(wait=False, kill_workers=True)
        raise
    return [results[position] for position in range(len(job_overrides))]
