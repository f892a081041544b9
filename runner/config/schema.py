"""The config schemas: one home for every default that is not a component's own constructor argument.

The dataclasses here are what the engine and the trainer take, and they are registered in Hydra's
ConfigStore (group ``schema``) so that each YAML merges onto its schema: a misspelled key or a wrong
type fails at compose time with the key's name. Components built from ``_target_`` (strategies, models,
data sources, evaluations) keep their defaults in their constructors and are checked against them
(``runner.config.build``); what every option of such a group shares is a rules schema here
(``StrategyRules``, ``DataRules``, ``UniverseRules``). Hydra is imported only when used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from runner.errors import ConfigError, ConfigTypeError

MODES = ("max", "min")
DEVICES = ("auto", "cpu", "cuda")
REBALANCE = "1 (every bar), an integer k >= 2 (every k bars), weekly, monthly"


@dataclass(frozen=True)
class Doc:
    """One config key's documentation: what it means, its unit, and the values it allows (one line each)."""

    meaning: str
    unit: str = ""
    allowed: str = ""


def documented(default: Any, meaning: str, unit: str = "", allowed: str = "") -> Any:
    """A schema field carrying its ``Doc`` (read by ``runner.config.docs``; OmegaConf ignores field metadata)."""
    doc = {"doc": Doc(meaning, unit, allowed)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=doc)
    return field(default=default, metadata=doc)


@dataclass
class DataRules:
    """What every data source shares, applied by ``runner.data.loader`` (the source's own keys are its
    constructor's: ``conf/data/*.yaml``)."""

    start: str | None = documented(None, "first bar kept (inclusive)", "date", "YYYY-MM-DD or null")
    end: str | None = documented(None, "last bar kept (inclusive)", "date", "YYYY-MM-DD or null")
    splits: list[float] = documented([0.6, 0.2, 0.2], "chronological train/val/test shares of the bars",
                                     "fractions", "3 numbers >= 0 summing to 1")


@dataclass
class UniverseRules:
    """What every universe shares: how its assets are aligned on the union of their timestamps."""

    max_fill: int = documented(5, "bars an asset's last price is carried over where it has no bar (return 0); past "
                               "them, and before its first bar, it is not tradable (a position is sold at its last "
                               "price)", "bars", ">= 0")
    resample: str | None = documented(None, "aggregate every asset's bars to this frequency first (open first, high "
                                      "max, low min, close last, volume summed; a bar labelled by its period's "
                                      "start), so that intraday and daily assets share one calendar", "",
                                      "null (assets must share a spacing), or a pandas offset: 1D, 1h, 1W")


@dataclass
class BacktestConf:
    """Costs and accounting of the backtest engine (``runner.engine.backtest``)."""

    initial_capital: float = documented(100_000.0, "equity at the start of every segment", "currency", "> 0")
    commission: float = documented(0.0005, "cost per trade", "fraction of traded notional", ">= 0")
    slippage: float = documented(0.0, "price impact per trade, added to commission",
                                 "fraction of traded notional", ">= 0")
    periods_per_year: Any = documented("auto", "bars a year, for annualised metrics", "bars/year",
                                       "auto (inferred from the timestamps) or a number > 0")
    risk_free_rate: float = documented(0.0, "subtracted from returns in Sharpe and Sortino", "annual fraction",
                                       "finite")
    max_leverage: float = documented(1.0, "the most gross exposure sum_i |w[t,i]|: a bar's weights are scaled down "
                                     "together when over it", "x equity", "> 0")
    rebalance: Any = documented(1, "when the book trades to its targets (between rebalances weights drift with "
                                "prices)", "bars", REBALANCE)
    asset_costs: dict[str, float] = documented({}, "a universe's per-asset cost (replaces commission + slippage "
                                               "for that symbol)", "fraction of traded notional",
                                               "SYMBOL: rate >= 0, set as +backtest.asset_costs.WTI=0.001")

    def __post_init__(self) -> None:
        if self.periods_per_year != "auto" and (isinstance(self.periods_per_year, (bool, str))
                                                or not self.periods_per_year > 0):
            raise ConfigError(f"backtest.periods_per_year must be auto or a number > 0, got {self.periods_per_year!r}.")
        if not (self.rebalance in ("weekly", "monthly") or (type(self.rebalance) is int and self.rebalance >= 1)):
            raise ConfigError(f"backtest.rebalance={self.rebalance!r} is not valid; allowed: {REBALANCE}.")
        rules = {"initial_capital": ("> 0", self.initial_capital > 0), "commission": (">= 0", self.commission >= 0),
                 "slippage": (">= 0", self.slippage >= 0),
                 "max_leverage": ("> 0", self.max_leverage > 0), "risk_free_rate": ("finite", True)}
        for key, (allowed, ok) in rules.items():
            value = getattr(self, key)
            if not ok or not math.isfinite(value):
                raise ConfigError(f"backtest.{key} must be {allowed}, got {value!r}.")

    @property
    def cost_rate(self) -> float:
        return self.commission + self.slippage


@dataclass
class TrainerConf:
    """How a model trains (``runner.ml.training``); the network itself is the ``model`` group."""

    epochs: int = documented(30, "most passes over the train segment", "epochs", ">= 1")
    batch_size: int = documented(128, "rows per gradient step", "rows", ">= 1")
    lr: float = documented(1e-3, "Adam learning rate", "", "> 0")
    weight_decay: float = documented(1e-4, "Adam weight decay (L2 penalty)", "", ">= 0")
    patience: int = documented(5, "epochs without a better validation loss before stopping", "epochs", ">= 1")
    device: str = documented("auto", "where the model trains (auto: cuda when available)", "", "auto | cpu | cuda")

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patience"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"trainer.{key} must be >= 1, got {getattr(self, key)}.")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ConfigError(f"trainer.lr must be > 0 and trainer.weight_decay >= 0, got {self.lr}, "
                             f"{self.weight_decay}.")
        if self.device not in DEVICES:
            raise ConfigError(f"trainer.device={self.device!r} is not valid; allowed: {', '.join(DEVICES)}.")


@dataclass
class StrategyRules:
    """What every strategy shares; applied by ``strategies.base.Strategy``, never by a subclass."""

    long_only: bool = documented(True, "shorts become flat (false: the flat side is short, -1)", "", "true | false")
    forecast_threshold: float = documented(0.0, "with a model: trade only when |forecast| exceeds this",
                                           "scaled return", ">= 0")

    def __post_init__(self) -> None:
        if not isinstance(self.long_only, bool):
            raise ConfigTypeError(f"strategy.long_only must be true or false, got {self.long_only!r}.")
        if not math.isfinite(self.forecast_threshold) or self.forecast_threshold < 0:
            raise ConfigError(f"strategy.forecast_threshold must be >= 0, got {self.forecast_threshold!r}.")


@dataclass
class TrackingConf:
    """Where runs are recorded (``MLFLOW_TRACKING_URI`` in the environment overrides it)."""

    uri: str | None = documented(None, "the MLflow tracking store", "URI",
                                 "null (sqlite:///LAUNCH_DIR/outputs/mlflow.db) or http(s)://host:port")


@dataclass
class SelectionConf:
    """How a run is scored for sweeps and reports."""

    metric: str = documented("val_sharpe_ratio", "the metric a sweep optimises and its winner is chosen by", "",
                             "any logged metric key, e.g. val_sharpe_ratio, test_cagr")
    mode: str = documented("max", "whether higher or lower is better", "", "max | min")


@dataclass
class Config:
    """The top level of an experiment's config."""

    seed: int = documented(42, "seed for data=synthetic and model training", "", "int")
    experiment_name: str = documented("trading_experiment", "the MLflow experiment runs go to", "", "any name")
    run_name: str | None = documented(None, "the run's name", "", "null: strategy-model-data, e.g. momentum-mlp-sp500")
    sweep_name: str | None = documented(None, "-m sweeps: the parent run's name (jobs: NAME-0, ...; their runs say "
                                        "what they are and their swept values)", "", "null: sweep_YYYYmmdd_HHMMSS")
    resume: bool = documented(True, "-m sweeps: rerunning the same sweep_name skips its own FINISHED configs "
                              "of the current engine version", "", "true | false")
    reuse_runs: bool = documented(False, "-m sweeps: also skip configs with a FINISHED run anywhere in the "
                                  "experiment", "", "true | false")
    verbose: bool = documented(False, "a single run also prints its timings (training, whole run); a sweep, Hydra's "
                                      "own log lines (launching, each job's overrides)", "", "true | false")
    selection: SelectionConf = field(default_factory=SelectionConf)
    data: Any = "???"  # the data group: a source's _target_ and keys, beside DataRules
    model: Any = "???"
    trainer: TrainerConf = "???"  # type: ignore[assignment]
    backtest: BacktestConf = "???"  # type: ignore[assignment]
    evaluation: Any = "???"  # the evaluation group: a _target_ class and its keys
    tracking: TrackingConf = "???"  # type: ignore[assignment]
    strategy: Any = None


SCHEMAS: dict[str, type] = {"backtest": BacktestConf, "trainer": TrainerConf,
                            "tracking": TrackingConf, "selection": SelectionConf}


def typed(config: Any) -> Config:
    """The composed config as typed objects, once (``OmegaConf.to_object``): the schemas become their dataclasses
    (each checking its values), and the ``_target_`` groups (strategy, model, data, evaluation) stay plain
    mappings for their builders. ``config``: Hydra's composed config, or a resolved mapping of one."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    if not OmegaConf.is_config(config):
        config = OmegaConf.merge(OmegaConf.structured(Config), config)
    try:
        return OmegaConf.to_object(config)  # type: ignore[return-value]
    except MissingMandatoryValue as missing:  # a YAML's ``???``: the user must give it
        key = missing.full_key
        raise ConfigError(f"{key} is required and has no value; set it on the command line: {key}=...") from None


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (``/schema/<name>``), before composition."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    # hydra/hydra_logging/runner.yaml: Hydra's own INFO lines with verbose=true only
    OmegaConf.register_new_resolver("runner_log_level", lambda verbose: "INFO" if verbose else "WARNING",
                                    replace=True)
    store = ConfigStore.instance()
    store.store(group="schema", name="config", node=Config)
    for name, schema in SCHEMAS.items():
        store.store(group="schema", name=name, node=schema)
    # Plain nodes, not typed ones: each option's own keys merge beside the shared rules.
    store.store(group="schema", name="strategy_rules", node=dataclasses.asdict(StrategyRules()))
    store.store(group="schema", name="data_rules", node=dataclasses.asdict(DataRules()))
    store.store(group="schema", name="universe_rules", node=dataclasses.asdict(UniverseRules()))
