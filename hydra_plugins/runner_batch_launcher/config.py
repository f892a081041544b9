"""``hydra/launcher=batch``'s settings, in Hydra's ConfigStore (no ``from __future__ import annotations`` here:
Hydra's plugin scan runs this module outside ``sys.modules``, where a dataclass cannot resolve string annotations)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class BatchLauncherConf:
    _target_: str = "hydra_plugins.runner_batch_launcher.batch_launcher.BatchLauncher"
    figures: int = 3  # the best batched configurations of a launch that get figures (0: none)
    chunk: int = 128  # configurations per engine pass: bounds memory (~10 arrays of bars x chunk floats)
    writer: int = 64  # a group of at least this many goes into a local store through a second process (0: never)


ConfigStore.instance().store(group="hydra/launcher", name="batch", node=BatchLauncherConf, provider="trading-runner")
