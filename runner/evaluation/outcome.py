"""What a run works on and what it produces: the prepared (validated) experiment and its outcome. Their own
module, so that the evaluations that take one (``walk_forward``) and ``experiment``, which calls them, import
neither the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.config.schema import BacktestConf, Config, TrainerConf
    from runner.data.universe import Universe
    from runner.engine.backtest import BacktestResult
    from runner.ml.dataset import Dataset
    from runner.ml.training import TrainingResult
    from strategies.base import Strategy


@dataclass
class Prepared:
    """A validated experiment, ready to run."""

    config: Config  # the typed config (not redacted: used, never logged as is)
    strategy: Strategy
    backtest: BacktestConf
    model_factory: Callable[..., Any] | None  # the network's constructor awaiting n_features
    trainer: TrainerConf | None
    sequence_length: int  # feature rows a model reads per forecast (0: one row)
    book: Universe  # the bars x assets data (a single series: one column)
    train_end: int
    val_end: int
    seed: int
    torch_threads: int | None = None  # set for sweep jobs sharing the CPU with other jobs
    folds: list[Any] | None = None  # evaluation=walk_forward: runner.evaluation.walk_forward.Fold per fold
    final_fold: Any = None  # evaluation.final_test_bars: the untouched final stretch, laid out as one more fold
    cpcv: Any = None  # evaluation=cpcv: runner.evaluation.cpcv.CpcvPlan
    data_name: str = "data"  # the data option (sp500, csv, ...), for titles and messages


@dataclass
class Outcome:
    """What a run computed: the backtest, its selection value, the training and walk-forward details, and the
    model's dataset (its standardisation travels with the logged model). The ids are set once it is recorded."""

    result: BacktestResult
    selection_value: float
    training: TrainingResult | None = None
    walk: Any = None  # evaluation=walk_forward: runner.evaluation.walk_forward.WalkForward
    dataset: Dataset | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    cpcv: Any = None  # evaluation=cpcv: runner.evaluation.cpcv.Cpcv
