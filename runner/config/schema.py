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

from runner.errors import ConfigError, ConfigTypeError, NotFoundError

MODES = ("max", "min")
DEVICES = ("auto", "cpu", "cuda")
REBALANCE = "1 (every bar), an integer k >= 2 (every k bars), weekly, monthly"
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


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
class DataConf:
    """The bars: a bundled series, your own file, or a seeded random walk (``runner.data.series``)."""

    source: str = documented("???", "where the bars come from (set by the data group)", "",
                             "sp500 | nasdaq | csv | synthetic | universe | synthetic_universe | bundled_universe")
    start: str | None = documented(None, "first bar kept (inclusive)", "date", "YYYY-MM-DD or null")
    end: str | None = documented(None, "last bar kept (inclusive)", "date", "YYYY-MM-DD or null")
    splits: list[float] = documented([0.6, 0.2, 0.2], "chronological train/val/test shares of the bars",
                                     "fractions", "3 numbers >= 0 summing to 1")
    path: str | None = documented(None, "data=csv: the file to read; data=universe: a folder of per-symbol files or "
                                  "one long file", "path", "a .csv or .parquet file, or a folder of them")
    date_column: str | None = documented(None, "data=csv: the column of timestamps", "",
                                         "a column name; null: date/datetime/timestamp/time, else the first")
    n_bars: int = documented(2000, "data=synthetic*: number of bars", "bars", ">= 2")
    drift: float = documented(0.0003, "data=synthetic*: mean log return per bar (synthetic_universe: 0.0002)",
                              "per bar", "finite")
    volatility: float = documented(0.01, "data=synthetic: std of the log return per bar", "per bar", ">= 0")
    regimes: int = documented(1, "data=synthetic: blocks of alternating drift sign", "", ">= 1")
    seed: int | None = documented(None, "data=synthetic*: random seed", "", "int; null: the top-level seed")
    n_assets: int = documented(20, "data=synthetic_universe: number of assets", "assets", ">= 2")
    drift_dispersion: float = documented(0.0, "data=synthetic_universe: std of the per-asset drifts (0: no "
                                         "cross-sectional edge)", "per bar", ">= 0")
    market_volatility: float = documented(0.01, "data=synthetic_universe: std of the market factor", "per bar", ">= 0")
    idio_volatility: float = documented(0.015, "data=synthetic_universe: std of each asset's noise", "per bar", ">= 0")
    max_fill: int = documented(5, "universes: bars an asset's last price is carried over where it has no bar "
                               "(return 0); past them, and before its first bar, it is not tradable (a position "
                               "is sold at its last price)", "bars", ">= 0")


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
class HoldoutConf:
    """One chronological train/val/test split (``data.splits``)."""

    name: str = documented("holdout", "how the run is judged (set by the evaluation group)", "",
                           "holdout | walk_forward")


@dataclass
class WalkForwardConf:
    """Refit per fold on the bars before it, trade the next stretch, judge the stitched out-of-sample record."""

    name: str = documented("walk_forward", "how the run is judged (set by the evaluation group)", "",
                           "holdout | walk_forward")
    folds: int = documented(5, "out-of-sample stretches, each traded by a model fitted before it", "", ">= 1")
    window: str = documented("expanding", "each fold trains on every bar before it, or on the last train_bars",
                             "", "expanding | rolling")
    train_bars: int | None = documented(None, "the rolling window, or the first fold's training bars when "
                                        "expanding (validation included)", "bars",
                                        "null (half the bars), or val_bars plus the warm-up and 10 rows to fit")
    val_bars: int | None = documented(None, "the end of each training window kept for early stopping", "bars",
                                      "null (a fifth of train_bars) or >= 2")
    test_bars: int | None = documented(None, "each fold's out-of-sample stretch", "bars",
                                       "null (the bars after the first window, split evenly) or >= 2")
    gap: int = documented(1, "bars left out between a fold's training bars and its test bars (no training target "
                          "overlaps the test stretch)", "bars", ">= 1 (the target horizon) with a model, >= 0 without")


EVALUATIONS: dict[str, type] = {"holdout": HoldoutConf, "walk_forward": WalkForwardConf}


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
    verbose: bool = documented(False, "a single run also prints its timings (training, whole run)", "", "true | false")
    selection: SelectionConf = field(default_factory=SelectionConf)
    data: DataConf = "???"  # type: ignore[assignment]  (filled by the data group)
    model: Any = "???"
    trainer: TrainerConf = "???"  # type: ignore[assignment]
    backtest: BacktestConf = "???"  # type: ignore[assignment]
    evaluation: Any = "???"  # holdout | walk_forward (checked against EVALUATIONS in runner.evaluation.experiment)
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
            raise ConfigTypeError(unknown_key_message(group, key, allowed))
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
        raise NotFoundError(f"{group}._target_={target!r} cannot be imported ({error}). Point it at a class, "
                          f"e.g. strategies.momentum.Momentum.") from None


def check_arguments(config: Mapping[str, Any], group: str, supplied: tuple[str, ...] = ()) -> Any:
    """The ``_target_`` class, after checking every key against its constructor ("did you mean ...?").

    ``supplied`` names the arguments the runner passes itself (e.g. ``n_features``): not config keys.
    """
    target = config.get("_target_")
    if not target:
        raise ConfigError(f"{group} has no _target_; set {group}._target_ to a class path.")
    cls = import_target(str(target), group)
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return cls
    allowed = [name for name in parameters if name not in supplied]
    for key in config:
        if key not in HYDRA_KEYS and key not in parameters:
            raise ConfigTypeError(unknown_key_message(group, key, allowed))
    return cls


def build(config: Mapping[str, Any], group: str, **supplied: Any) -> Any:
    """Instantiate ``config['_target_']`` with its keys plus ``supplied``; a missing argument names the key."""
    cls = check_arguments(config, group, tuple(supplied))
    kwargs = {k: v for k, v in config.items() if k not in HYDRA_KEYS}
    try:
        return cls(**kwargs, **supplied)
    except TypeError as error:
        if "required positional argument" in str(error) or "missing" in str(error):
            raise ConfigTypeError(f"{group}: {error}") from None
        raise


def model_factory(config: Mapping[str, Any]) -> Any:
    """The network's constructor with its config keys bound (``_partial_: true``), awaiting ``n_features``."""
    check_arguments(config, "model", ("n_features",))
    if config.get("_partial_") is not True:
        raise ConfigError("model._partial_ must be true: the network is built once the number of features is known "
                         "(add `_partial_: true` to the model's YAML).")
    from hydra.utils import instantiate

    return instantiate(dict(config), _convert_="all")
