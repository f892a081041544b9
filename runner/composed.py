"""Job configs composed ahead of the jobs (see ``ComposeOnceSweeper``): once each, and off the critical path.

Hydra's basic sweeper composes every job's config (~0.17 s here) to check the batch before any job runs,
and the launcher composes it again to run it. ``ComposedConfigs`` composes the first job in this process,
so an error every job shares (a missing group option, a mistyped key) still stops the sweep before any
job runs, and the rest of the batch in a helper process on another core while the jobs run; each config
comes back pickled (~1 ms). A job whose config cannot be composed stops the sweep before the next job
starts, with Hydra's error; its earlier jobs have run (and ``resume`` skips them when the sweep is rerun).
On one core, or if the helper dies, configs are composed here, as Hydra does.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
from typing import Any

from hydra.core.config_loader import ConfigLoader
from omegaconf import DictConfig

HELPER_POLL_SECONDS = 1.0


def _same(loader: ConfigLoader) -> ConfigLoader:
    return loader


def _compose_batch(payload: bytes, out: Any) -> None:
    """The helper process: compose each job's config in order and send it back pickled."""
    import cloudpickle  # Hydra's plugin scan re-executes modules: their classes no longer pickle by name
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    import runner.config  # noqa: F401  (the warning filters and schemas, as in the launching process)

    setup_globals()
    loader, master, batch, state = pickle.loads(payload)
    Singleton.set_state(state)
    for position, overrides in enumerate(batch):
        try:
            out.put((position, cloudpickle.dumps(loader.load_sweep_config(master, overrides)), None))
        except Exception as error:  # noqa: BLE001 - sent back and raised where the job would start
            out.put((position, None, _portable(error)))
            return


def _portable(error: Exception) -> bytes:
    """The error pickled, or Hydra's composition error with its message where it would not unpickle."""
    from hydra.errors import ConfigCompositionException

    try:
        data = pickle.dumps(error)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - e.g. MissingConfigException needs more arguments than it pickles
        return pickle.dumps(ConfigCompositionException(str(error)))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ComposedConfigs(ConfigLoader):
    """Hydra's config loader, whose ``load_sweep_config`` hands out the configs ``prepare`` composed.

    Pickled - as Hydra's joblib launcher does to send it to workers - it becomes the plain loader.
    """

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self._ready: dict[tuple[str, ...], list[Any]] = {}  # overrides -> configs (or pickles), in job order
        self._composed_here: dict[tuple[str, ...], int] = {}  # jobs composed here before the helper sent them
        self._keys: list[tuple[str, ...]] = []
        self._received = 0
        self._helper: Any = None
        self._results: Any = None
        self._error: BaseException | None = None

    def prepare(self, master: DictConfig, batch: list[list[str]]) -> None:
        """Compose the first job now (raising as Hydra would) and start composing the rest in a helper."""
        self.close()
        self._ready.clear()
        self._composed_here.clear()
        self._keys = [tuple(o) for o in batch]
        self._received, self._error = 1, None
        if not batch:
            return
        self._ready.setdefault(self._keys[0], []).append(self.loader.load_sweep_config(master, batch[0]))
        rest = batch[1:]
        if rest and _cores() > 1:
            import cloudpickle  # Hydra's state holds closures (its resolvers)
            from hydra.core.singleton import Singleton

            payload = cloudpickle.dumps((self.loader, master, rest, Singleton.get_state()))
            context = multiprocessing.get_context("spawn")
            self._results = context.Queue()
            self._helper = context.Process(target=_compose_batch, args=(payload, self._results), daemon=True,
                                           name="compose-configs")
            self._helper.start()
        else:
            for overrides in rest:
                self._ready.setdefault(tuple(overrides), []).append(self.loader.load_sweep_config(master, overrides))
            self._received = len(batch)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        key = tuple(sweep_overrides)
        # Until the helper has sent its first config it is still starting (~1 s): compose here meanwhile.
        self._drain(wait_for=key if self._received > 1 else None)
        if self._error is not None:
            raise self._error
        ready = self._ready.get(key)
        if ready:
            config = ready.pop(0)
            return pickle.loads(config) if isinstance(config, bytes) else config
        if key in self._keys[self._received:]:
            self._composed_here[key] = self._composed_here.get(key, 0) + 1  # drop the helper's copy
        return self.loader.load_sweep_config(master_config, sweep_overrides)

    def _drain(self, wait_for: tuple[str, ...] | None) -> None:
        """Take what the helper has sent; wait while the job asked for is still being composed."""
        while self._helper is not None and self._error is None:
            waiting = (wait_for is not None and wait_for in self._keys[self._received:]
                       and not self._ready.get(wait_for))
            try:
                message = self._results.get(timeout=HELPER_POLL_SECONDS) if waiting else self._results.get_nowait()
            except queue.Empty:
                if waiting and not self._helper.is_alive():
                    self._helper = None  # died without a word: compose the rest here
                if waiting and self._helper is not None:
                    continue
                return
            position, config, error = message
            if error is not None:
                self._error = pickle.loads(error)
                return
            key = self._keys[position + 1]
            if self._composed_here.get(key):
                self._composed_here[key] -= 1
            else:
                self._ready.setdefault(key, []).append(config)
            self._received = position + 2

    def close(self) -> None:
        if self._helper is not None and self._helper.is_alive():
            self._helper.terminate()
        self._helper = None

    def __reduce__(self) -> tuple[Any, ...]:
        return _same, (self.loader,)

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)
