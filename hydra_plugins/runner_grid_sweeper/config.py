"""``hydra/sweeper=grid``'s settings, in Hydra's ConfigStore: the basic sweeper's own two (no ``from __future__
import annotations`` here: Hydra's plugin scan runs this module outside ``sys.modules``, where a dataclass cannot
resolve string annotations)."""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.runner_grid_sweeper.grid_sweeper.GridSweeper"
    max_batch_size: int | None = None  # jobs per launcher call (None: the whole grid in one call)
    # sweep overrides from the config, before the command line's (a dict, not the basic sweeper's null: so that
    # +hydra.sweeper.params={KEY:VALUES} on the command line merges)
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="trading-runner")
