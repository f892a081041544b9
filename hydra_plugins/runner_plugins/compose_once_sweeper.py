"""`hydra/sweeper=basic` in the runner (conf/hydra/sweeper/basic.yaml): each job config composed once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ComposeOnceSweeper(BasicSweeper):
    """Hydra's ``BasicSweeper``, except that each job's config is composed once, mostly on another core.

    ``BasicSweeper`` composes every job's config to check the batch before any job starts, then the
    launcher composes it again to run it (~0.17 s each here). This sweeper composes the first job's config
    at once and the others in a helper process while jobs run (``runner.composed``); the launcher gets them
    from there. Everything else (batches, ``params``) is ``BasicSweeper``'s.
    """

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from runner.composed import ComposedConfigs

        self.composed = ComposedConfigs(hydra_context.config_loader)
        super().setup(hydra_context=HydraContext(config_loader=self.composed, callbacks=hydra_context.callbacks),
                      task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except BaseException as error:
            from runner.sweep import end_parent_after_error

            assert self.config is not None
            end_parent_after_error(self.config.hydra.sweep.dir, error)
            raise
        finally:
            self.composed.close()

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.config is not None
        self.composed.prepare(self.config, [list(overrides) for overrides in batch])
