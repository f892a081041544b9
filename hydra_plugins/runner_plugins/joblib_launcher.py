"""`hydra/launcher=joblib` in the runner (conf/hydra/launcher/joblib.yaml): see ``runner.launcher``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RunnerJoblibLauncher(Launcher):
    """Runs ``n_jobs`` jobs at a time: this process and ``n_jobs - 1`` loky workers (``runner.launcher``)."""

    def __init__(self, n_jobs: int = -1, **joblib_options: Any) -> None:
        from runner.launcher import check_options

        check_options(joblib_options)
        self.n_jobs = n_jobs
        self.n_workers = 0
        self.executor: Any = None
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from runner.launcher import concurrent_jobs, imports_for, start_workers

        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context
        self.n_workers = concurrent_jobs(self.n_jobs) - 1
        if self.n_workers > 0:  # started now: their imports overlap the sweep's own start
            self.executor = start_workers(self.n_workers, imports_for(config))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from runner.launcher import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
