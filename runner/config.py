"""The config schemas (one home for every default) and building ``_target_`` components from them.

The dataclasses here are what the engine and the trainer take, and they are registered in Hydra's
ConfigStore (group ``schema``) so that each YAML merges onto its schema: a misspelled key or a wrong
type fails at compose time with the key's name. Strategies and models are checked against their own
constructors (one module + one YAML each, no schema edit needed). Hydra is imported only when used.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MODES = ("max", "min")
DEVICES = ("auto", "cpu", "cuda")
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


@dataclass
class DataConf:
    source: str = "???"  # sp500 | nasdaq | csv | synthetic
    start: str | None = None
    end: str | None = None
    splits: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    path: str | None = None
    date_column: str | None = None
    n_bars: int = 2000
    drift: float = 0.0003
    volatility: float = 0.01
    regimes: int = 1
    seed: int | None = None


@dataclass
class BacktestConf:
    """Costs and accounting of the backtest engine (``runner.engine.backtest``)."""

    initial_capital: float = 100_000.0
    commission: float = 0.0005  # fraction of traded notional
    slippage: float = 0.0  # fraction of traded notional
    periods_per_year: Any = "auto"  # bars a year, or auto: inferred from the bars' timestamps (runner.data)
    risk_free_rate: float = 0.0  # annual
    max_leverage: float = 1.0

    def __post_init__(self) -> None:
        if self.periods_per_year != "auto" and (isinstance(self.periods_per_year, (bool, str))
                                                or not self.periods_per_year > 0):
            raise ValueError(f"backtest.periods_per_year must be auto or a number > 0, got {self.periods_per_year!r}.")
        rules = {"initial_capital": ("> 0", self.initial_capital > 0), "commission": (">= 0", self.commission >= 0),
                 "slippage": (">= 0", self.slippage >= 0),
                 "max_leverage": ("> 0", self.max_leverage > 0), "risk_free_rate": ("finite", True)}
        for key, (allowed, ok) in rules.items():
            value = getattr(self, key)
            if not ok or not math.isfinite(value):
                raise ValueError(f"backtest.{key} must be {allowed}, got {value!r}.")

    @property
    def cost_rate(self) -> float:
        return self.commission + self.slippage


@dataclass
class TrainerConf:
    """How a model trains (``runner.ml.training``); the network itself is the ``model`` group."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without a better validation loss before stopping
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patience"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"trainer.{key} must be >= 1, got {getattr(self, key)}.")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"trainer.lr must be > 0 and trainer.weight_decay >= 0, got {self.lr}, "
                             f"{self.weight_decay}.")
        if self.device not in DEVICES:
            raise ValueError(f"trainer.device={self.device!r} is not valid; allowed: {', '.join(DEVICES)}.")


@dataclass
class StrategyRules:
    """What every strategy shares; applied by ``strategies.base.Strategy``, never by a subclass."""

    long_only: bool = True  # shorts become flat
    forecast_threshold: float = 0.0  # with a model: trade only when |forecast| exceeds this

    def __post_init__(self) -> None:
        if not isinstance(self.long_only, bool):
            raise TypeError(f"strategy.long_only must be true or false, got {self.long_only!r}.")
        if not math.isfinite(self.forecast_threshold) or self.forecast_threshold < 0:
            raise ValueError(f"strategy.forecast_threshold must be >= 0, got {self.forecast_threshold!r}.")


@dataclass
class TrackingConf:
    uri: str | None = None


@dataclass
class SelectionConf:
    metric: str = "val_sharpe_ratio"
    mode: str = "max"  # max | min


@dataclass
class Config:
    seed: int = 42
    experiment_name: str = "trading_experiment"
    run_name: str | None = None
    sweep_name: str | None = None
    resume: bool = True  # sweeps: rerunning the same sweep (sweep_name=...) skips its own FINISHED configurations
    reuse_runs: bool = False  # sweeps: also skip configurations with a FINISHED run anywhere in the experiment
    selection: SelectionConf = field(default_factory=SelectionConf)
    data: DataConf = "???"  # type: ignore[assignment]  (filled by the data group)
    model: Any = "???"
    trainer: TrainerConf = "???"  # type: ignore[assignment]
    backtest: BacktestConf = "???"  # type: ignore[assignment]
    tracking: TrackingConf = "???"  # type: ignore[assignment]
    strategy: Any = None


SCHEMAS: dict[str, type] = {"data": DataConf, "backtest": BacktestConf, "trainer": TrainerConf,
                            "tracking": TrackingConf, "selection": SelectionConf}


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (``/schema/<name>``), before composition."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(group="schema", name="config", node=Config)
    for name, schema in SCHEMAS.items():
        store.store(group="schema", name=name, node=schema)
    # A plain node, not a typed one: each strategy's own keys merge beside the shared rules.
    store.store(group="schema", name="strategy_rules", node=dataclasses.asdict(StrategyRules()))


def from_schema(schema: type, values: Mapping[str, Any], group: str) -> Any:
    """A schema dataclass from a config node; an unknown key is named with every allowed one."""
    allowed = [f.name for f in dataclasses.fields(schema)]
    for key in values:
        if key not in allowed:
            raise TypeError(unknown_key_message(group, key, allowed))
    return schema(**values)


def unknown_key_message(group: str, key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean {group}.{close[0]}?" if close else ""
    return f"{group}.{key} is not a known key; allowed: {', '.join(allowed) or '(none)'}.{hint}"


def import_target(target: str, group: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as error:  # Hydra raises ImportError/ValueError variants depending on the failure
        raise LookupError(f"{group}._target_={target!r} cannot be imported ({error}). Point it at a class, "
                          f"e.g. strategies.momentum.Momentum.") from None


def check_arguments(config: Mapping[str, Any], group: str, supplied: tuple[str, ...] = ()) -> Any:
    """The ``_target_`` class, after checking every key against its constructor ("did you mean ...?").

    ``supplied`` names the arguments the runner passes itself (e.g. ``n_features``): not config keys.
    """
    target = config.get("_target_")
    if not target:
        raise ValueError(f"{group} has no _target_; set {group}._target_ to a class path.")
    cls = import_target(str(target), group)
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return cls
    allowed = [name for name in parameters if name not in supplied]
    for key in config:
        if key not in HYDRA_KEYS and key not in parameters:
            raise TypeError(unknown_key_message(group, key, allowed))
    return cls


def build(config: Mapping[str, Any], group: str, **supplied: Any) -> Any:
    """Instantiate ``config['_target_']`` with its keys plus ``supplied``; a missing argument names the key."""
    cls = check_arguments(config, group, tuple(supplied))
    kwargs = {k: v for k, v in config.items() if k not in HYDRA_KEYS}
    try:
        return cls(**kwargs, **supplied)
    except TypeError as error:
        if "required positional argument" in str(error) or "missing" in str(error):
            raise TypeError(f"{group}: {error}") from None
        raise


def model_factory(config: Mapping[str, Any]) -> Any:
    """The network's constructor with its config keys bound (``_partial_: true``), awaiting ``n_features``."""
    check_arguments(config, "model", ("n_features",))
    if config.get("_partial_") is not True:
        raise ValueError("model._partial_ must be true: the network is built once the number of features is known "
                         "(add `_partial_: true` to the model's YAML).")
    from hydra.utils import instantiate

    return instantiate(dict(config), _convert_="all")
