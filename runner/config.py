"""Structured-config schemas registered in Hydra's ConfigStore (group ``schema``).

Each YAML in conf/data, conf/backtest, conf/tracking and conf/config.yaml merges onto its schema, so a
misspelled key or a wrong type fails at compose time with the key's name. Strategies and models are
checked by their own constructors (one module + one YAML each, no schema edit needed).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# conf/hydra/sweeper/basic.yaml and conf/hydra/launcher/joblib.yaml replace Hydra's by name (see those files);
# Hydra then checks each against the schema of the one it replaces, which they fit, and warns that such name
# matching is deprecated.
warnings.filterwarnings("ignore", category=UserWarning,
                        message=r"\s*'hydra/(sweeper/basic|launcher/joblib)' is validated against ConfigStore schema")


@dataclass
class DataConf:
    source: str = MISSING  # sp500 | nasdaq | csv | synthetic
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
    initial_capital: float = 100_000.0
    commission: float = 0.0005
    slippage: float = 0.0
    periods_per_year: int = 252
    risk_free_rate: float = 0.0
    max_leverage: float = 1.0


@dataclass
class TrackingConf:
    uri: str | None = None


@dataclass
class SelectionConf:
    metric: str = "val_sharpe_ratio"
    mode: str = "max"


@dataclass
class Config:
    seed: int = 42
    experiment_name: str = "trading_experiment"
    run_name: str | None = None
    sweep_name: str | None = None
    resume: bool = True
    selection: SelectionConf = field(default_factory=SelectionConf)
    data: Any = MISSING
    model: Any = MISSING
    backtest: Any = MISSING
    tracking: Any = MISSING
    strategy: Any = None


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="schema", name="config", node=Config)
    store.store(group="schema", name="data", node=DataConf)
    store.store(group="schema", name="backtest", node=BacktestConf)
    store.store(group="schema", name="tracking", node=TrackingConf)


register()
