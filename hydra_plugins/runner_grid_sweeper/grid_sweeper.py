"""``hydra/sweeper=grid``: the basic sweeper's grid (the same jobs, in the same order, in the same batches) checked
before any job runs at a fraction of its cost.

Hydra's basic sweeper composes every job's config before its launcher sees the first (about 70 ms a job here, as
long again as the launcher's own composition): a 400-configuration grid spent 28 s in it. This sweeper composes
only enough jobs that every value of every override is composed at least once under each combination of config
group choices, and a key that takes any scalar (an untyped value: a strategy's parameters) once: a misspelt key, a
group option that does not exist or a value that does not fit its schema stops the sweep before any job runs, as
with the basic sweeper, after one composition per combination of group choices for a grid of strategy
parameters, and sqrt(jobs) for a square grid of typed values.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from hydra.core.override_parser.types import Override
    from hydra.core.utils import JobReturn
    from hydra.plugins.launcher import Launcher
    from hydra.types import HydraContext, TaskFunction
    from omegaconf import DictConfig

log = logging.getLogger(__name__)


def grid(overrides: Sequence[Override], max_batch_size: int | None) -> list[list[list[str]]]:
    """The jobs' overrides as the basic sweeper makes them: the product of each key's values (a later override of a
    key replaces an earlier one, in the earlier one's place), split into batches of at most max_batch_size."""
    from hydra.errors import HydraException

    values: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            assert override.value_type is not None
            raise HydraException(f"GridSweeper does not support sweep type : {override.value_type.name}")
    jobs = [list(job) for job in itertools.product(*values.values())]
    if max_batch_size is None:
        return [jobs]
    if max_batch_size < 1:
        raise HydraException(f"hydra.sweeper.max_batch_size={max_batch_size}: a positive number of jobs, or null")
    return [jobs[i:i + max_batch_size] for i in range(0, len(jobs), max_batch_size)]


def shape_groups(batch: Sequence[Sequence[str]], shapes_config: Callable[[str], bool]) -> list[list[Sequence[str]]]:
    """The batch's jobs grouped by their overrides that shape the config (a config group's choice, an added or
    deleted key), each group in the grid's order."""
    groups: dict[tuple[str, ...], list[Sequence[str]]] = {}
    for job in batch:
        groups.setdefault(tuple(o for o in job if shapes_config(o)), []).append(job)
    return list(groups.values())


def cover(jobs: list[Sequence[str]], token: Callable[[str], str] = str) -> list[Sequence[str]]:
    """Jobs that between them hold every override of ``jobs`` (overrides with the same ``token`` count as one),
    greedily: the job holding the most tokens no job taken yet holds (the first such in the grid's order), until
    all are held. The first job is always taken; a grid of a x b values takes max(a, b) jobs."""
    tokens = [{token(o) for o in job} for job in jobs]
    unseen = set().union(*tokens) - tokens[0]
    taken = [jobs[0]]
    while unseen:
        best = max(range(len(jobs)), key=lambda i: len(unseen & tokens[i]))
        taken.append(jobs[best])
        unseen -= tokens[best]
    return taken


def free_keys(config: DictConfig, overrides: set[str]) -> set[str]:
    """The overrides ``KEY=VALUE`` (no prefix, a scalar value) whose key, in this composed config, takes any
    scalar: its node accepts an arbitrary string and null (an untyped value, or an optional string), so no scalar
    value of that key can fail to compose, and composing one of them checks them all."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import read_write
    from omegaconf.errors import OmegaConfBaseException

    parser = OverridesParser.create()
    probe = copy.deepcopy(config)
    free, takes_any = set(), {}
    for text in overrides:
        if text[:1] in "+~":
            continue
        override = parser.parse_override(text)
        if override.package is not None or isinstance(override.value(), (dict, list)):
            continue
        key = override.key_or_group
        if key not in takes_any:
            try:
                with read_write(probe):
                    OmegaConf.update(probe, key, "\x00any scalar", merge=False)
                    OmegaConf.update(probe, key, None, merge=False)
                takes_any[key] = True
            except OmegaConfBaseException:  # a typed value (int, float, bool, enum, a non-optional string), or none
                takes_any[key] = False
        if takes_any[key]:
            free.add(text)
    return free


class GridSweeper(Sweeper):
    """Hydra's basic sweeper's grid and batches, with a check that composes a covering set of jobs, not each."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        self.max_batch_size, self.params = max_batch_size, dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self._groups: dict[str, bool] = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        assert self.hydra_context is not None and self.config is not None and self.launcher is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        batches = grid(overrides, self.max_batch_size)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Sequence[JobReturn]] = []
        initial_job_idx = 0
        for batch in batches:
            self.validate(batch)
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for result in results:
                _ = result.return_value  # a failed job's exception, raised here as the basic sweeper does
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def validate(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose the jobs that cover the batch: per group of config shapes (``shape_groups``), its first job, then
        a ``cover`` of the group where all scalar values of a key that takes any scalar count as one (``free_keys``:
        no such value can fail to compose). Hydra's errors, before any job runs."""
        assert self.hydra_context is not None and self.config is not None
        start, composed = time.perf_counter(), 0
        for jobs in shape_groups(batch, self.shapes_config):
            first = self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                       sweep_overrides=list(jobs[0]))
            free = free_keys(first, {o for job in jobs for o in job})
            rest = cover(jobs, lambda o, free=free: o.split("=", 1)[0] + "=*" if o in free else o)[1:]
            for overrides in rest:
                self.hydra_context.config_loader.load_sweep_config(master_config=self.config,
                                                                  sweep_overrides=list(overrides))
            composed += 1 + len(rest)
        log.debug(f"Validated {len(batch)} jobs by composing {composed} in {time.perf_counter() - start:.2f} s")

    def shapes_config(self, override: str) -> bool:
        """Whether an override changes which keys the config has: a config group's choice, ``+key``, ``~key``."""
        assert self.hydra_context is not None
        if override[:1] in "+~":
            return True
        key = override.split("=", 1)[0].split("@", 1)[0]
        if key not in self._groups:
            options = self.hydra_context.config_loader.get_group_options(key.replace(".", "/"))
            self._groups[key] = bool(options)
        return self._groups[key]
