"""``hydra/launcher=batch``: Hydra's launcher interface over ``runner.sweeps.batch``, registered under the project's
own name in the ``hydra_plugins`` namespace, as Hydra documents for third-party plugins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hydra.plugins.launcher import Launcher

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from hydra.types import HydraContext, TaskFunction
    from omegaconf import DictConfig


class BatchLauncher(Launcher):
    """Groups a sweep's rule configurations into engine passes; runs other jobs as the basic launcher does."""

    def __init__(self, figures: int = 3, chunk: int = 128, writer: int = 64) -> None:
        from runner.errors import ConfigError

        for key, value, least in (("chunk", chunk, 1), ("figures", figures, 0), ("writer", writer, 0)):
            if value < least:
                raise ConfigError(f"hydra.launcher.{key}={value}: must be at least {least}.")
        self.figures, self.chunk, self.writer = figures, chunk, writer
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from runner.sweeps.batch import Launch, launch_jobs

        assert self.hydra_context is not None and self.task_function is not None and self.config is not None
        launch = Launch(self.hydra_context, self.task_function, self.config, self.figures, self.chunk, self.writer)
        return launch_jobs(launch, [list(o) for o in job_overrides], initial_job_idx)
