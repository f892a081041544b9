"""One experiment without Hydra: validate -> load bars (one series, or a universe) -> split -> features ->
train -> weights -> backtest -> log -> summary.

Everything that can be wrong with the input is checked in ``prepare``, before any MLflow run exists.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from runner.config.build import build, from_schema, model_factory
from runner.config.schema import MODES, BacktestConf, Config, StrategyRules, typed
from runner.data.loader import load_data
from runner.data.series import infer_periods_per_year, split_bounds
from runner.engine.backtest import run_backtest
from runner.errors import ConfigError, DataError
from runner.evaluation.outcome import Outcome, Prepared
from runner.tracking.lifecycle import check_stop

if TYPE_CHECKING:
    from runner.data.universe import Universe
    from strategies.base import Strategy

SUMMARY_METRICS = ("total_return", "cagr", "sharpe_ratio", "sortino_ratio", "max_drawdown", "calmar_ratio",
                   "exposure", "num_trades", "win_rate", "benchmark_total_return", "benchmark_sharpe_ratio")
COUNT_METRICS = ("num_trades", "num_bars", "max_drawdown_duration")


def build_strategy(config: Mapping[str, Any]) -> Strategy:
    """The strategy from its own keys, with the shared rules (``long_only``, ``forecast_threshold``) set."""
    shared = {f.name for f in dataclasses.fields(StrategyRules)}
    rules = from_schema(StrategyRules, {k: v for k, v in config.items() if k in shared}, "strategy")
    return build({k: v for k, v in config.items() if k not in shared}, "strategy").with_rules(rules)


def with_periods_per_year(backtest: BacktestConf, index: pd.Index) -> BacktestConf:
    """``auto`` becomes the density the bars' timestamps show; an explicit value more than 2x away from it
    is kept, with a warning (annualised metrics would be off by the square root of that factor or more)."""
    if backtest.periods_per_year == "auto":
        return dataclasses.replace(backtest, periods_per_year=infer_periods_per_year(index))
    try:
        inferred = infer_periods_per_year(index)
    except DataError:
        return backtest
    if not 0.5 <= backtest.periods_per_year / inferred <= 2.0:
        print(f"warning: backtest.periods_per_year={backtest.periods_per_year}, but these bars come about "
              f"{inferred} a year; set backtest.periods_per_year=auto (or {inferred}) unless that is meant.",
              file=sys.stderr)
    return backtest


def prepare(config: Config | Mapping[str, Any], data_choice: str = "data", book: Universe | None = None) -> Prepared:
    """Check every part of the config and load the data, before any MLflow run exists; a mistake raises a
    ``UserError``. ``config``: the typed config (``runner.config.schema.typed``), or a resolved mapping of it;
    ``book``: the bars ``config.data`` gives, when the caller has loaded them already (a batch of configurations
    that share their data)."""
    config = config if isinstance(config, Config) else typed(config)
    if config.selection.mode not in MODES:
        raise ConfigError(f"selection.mode={config.selection.mode!r} is not valid; allowed: {', '.join(MODES)}.")
    if config.selection.metric.startswith("final_test_"):
        raise ConfigError(f"selection.metric={config.selection.metric!r} selects on the final test, which exists to "
                          "be untouched by selection; select on oos_* (walk-forward) or val_* and read final_test_* "
                          "after.")
    strategy = build_strategy(config.strategy)
    backtest = config.backtest
    factory, trainer, sequence_length = None, None, 0
    if config.model["_target_"] and not strategy.uses_model:
        raise ConfigError(f"{type(strategy).__name__} has no use for a model (its rule ignores forecasts), but a "
                         f"model ({config.model['_target_'].rsplit('.', 1)[-1]}) was given; use model=none (its "
                         "default).")
    if config.model["_target_"]:
        from runner.ml.training import pick_device

        factory = model_factory(config.model)
        trainer = config.trainer
        sequence_length = int(getattr(factory(n_features=1), "sequence_length", 0))  # checks the model's values
        pick_device(trainer.device)  # trainer.device=cuda without CUDA fails here, not mid-run
    evaluation = build(config.evaluation, "evaluation")
    seed = config.seed
    book = book if book is not None else load_data(config.data, data_choice)
    if book.series and strategy.cross_sectional:
        raise ConfigError(f"{type(strategy).__name__} ranks assets against each other, but data={data_choice} is a "
                          "single series; use a universe: data=bundled_universe, synthetic_universe or universe "
                          "(data.path=FOLDER_OR_LONG_FILE).")
    if book.series and backtest.asset_costs:
        raise ConfigError(f"backtest.asset_costs={dict(backtest.asset_costs)} sets per-asset costs, but data="
                          f"{data_choice} is a single series; use backtest.commission.")
    from runner.engine.portfolio import cost_vector

    cost_vector(book.symbols, backtest.cost_rate, backtest.asset_costs)  # names only known symbols
    train_end, val_end = split_bounds(len(book.index), config.data["splits"])
    from runner.ml.dataset import MIN_TRAIN_ROWS

    min_train = strategy.warmup + sequence_length + (MIN_TRAIN_ROWS + 2 if factory is not None else 2)
    folds = evaluation.layout(len(book.index), factory is not None, min_train)
    from runner.evaluation.cpcv import CpcvEvaluation

    if isinstance(evaluation, CpcvEvaluation):
        return Prepared(config, strategy, with_periods_per_year(backtest, book.index), factory, trainer,
                        sequence_length, book, train_end, val_end, seed, data_name=data_choice,
                        cpcv=evaluation.plan(len(book.index), factory is not None, min_train))
    if folds is not None:
        return Prepared(config, strategy, with_periods_per_year(backtest, book.index), factory, trainer,
                        sequence_length, book, train_end, val_end, seed, folds=folds, data_name=data_choice,
                        final_fold=evaluation.final_fold(len(book.index), folds))
    if factory is not None and val_end - train_end < 2:
        raise DataError(f"data.splits={list(config.data['splits'])} leaves no validation segment, but a model "
                        "needs one for early stopping; give it a share, e.g. data.splits=[0.6,0.2,0.2], or use "
                        "model=none.")
    backtest = with_periods_per_year(backtest, book.index)
    needed = strategy.warmup + sequence_length + 2
    if train_end <= needed:
        raise DataError(f"too few bars: the train segment has {train_end} bars but {type(strategy).__name__} "
                        f"needs {needed} before its first weight; use more data (data.start/data.end) or a "
                        "shorter window.")
    return Prepared(config, strategy, backtest, factory, trainer, sequence_length, book, train_end, val_end,
                    seed, data_name=data_choice)


def target_weights(prepared: Prepared) -> tuple[np.ndarray, Any, Any]:
    """The book's target weights (bars x assets): the strategy's rule, or one model trained on the train split,
    pooled over every asset, whose forecasts go through the strategy's rule (ranked, for a cross-sectional one).
    ``(weights, training, dataset)``."""
    book, strategy = prepared.book, prepared.strategy
    if prepared.model_factory is None:
        return strategy.portfolio_weights(book), None, None
    from runner.ml.dataset import build_panel_dataset, panel_forecast
    from runner.ml.training import forecast, train_model

    dataset = build_panel_dataset(book.features(strategy.features), book.close, prepared.train_end,
                                  prepared.val_end, prepared.sequence_length)
    n_features = dataset.features.shape[1]
    training = train_model(lambda: prepared.model_factory(n_features=n_features), dataset, prepared.trainer,
                           prepared.seed, threads=prepared.torch_threads, check_stop=check_stop)
    forecasts = panel_forecast(forecast(training.model, dataset), len(book.index), book.n_assets)
    return strategy.portfolio_weights_from_forecast(forecasts, book), training, dataset


def compute(prepared: Prepared) -> Outcome:
    """The run's computing, from prepared data to metrics: weights (a rule, or models trained on the bars before
    what they trade), one backtest, metrics per segment or fold. Never touches MLflow (``runner.tracking.recorder``
    logs the outcome)."""
    metric = prepared.config.selection.metric
    if prepared.cpcv is not None:
        from runner.evaluation.cpcv import cpcv

        paths = cpcv(prepared, check_stop)
        return Outcome(paths.paths[0], float(paths.distribution.get(metric, math.nan)),
                       paths.trainings[-1] if paths.trainings else None, dataset=paths.dataset, cpcv=paths)
    if prepared.folds:
        from runner.evaluation.walk_forward import walk_forward

        walk = walk_forward(prepared, check_stop)
        return Outcome(walk.oos, float(walk.oos.flat_metrics().get(metric, math.nan)),
                       walk.trainings[-1] if walk.trainings else None, walk, walk.dataset)
    book = prepared.book
    weights, training, dataset = target_weights(prepared)
    check_stop()
    result = run_backtest(book.close, weights, prepared.train_end, prepared.val_end, prepared.backtest, book.index,
                          symbols=book.symbols)
    return Outcome(result, float(result.flat_metrics().get(metric, math.nan)), training, dataset=dataset)


def _cell(name: str, value: float) -> str:
    if name in COUNT_METRICS and math.isfinite(value):
        return f"{int(value):>22d}"
    return f"{value:>22.4f}"


def summary(outcome: Outcome, prepared: Prepared, tracking_uri: str | None = None) -> str:
    """A compact per-segment table of the main metrics (a CPCV run: their distribution over the paths), the run id
    and how to open it."""
    if outcome.cpcv is not None:
        return _cpcv_summary(outcome, prepared, tracking_uri)
    metrics = outcome.result.metrics
    segments = [s for s in ("train", "val", "test", "oos", "final_test") if s in metrics]
    width = max(len(m) for m in SUMMARY_METRICS) + 2
    labels = {"train": "train (in-sample)" if outcome.training else "train",
              "val": "val (early stopping)" if outcome.training else "val",
              "oos": f"oos ({len(prepared.folds or [])} folds)", "final_test": "final test"}
    lines = [f"{'metric':<{width}}" + "".join(f"{labels.get(s, s):>22}" for s in segments)]
    for name in SUMMARY_METRICS:
        lines.append(f"{name:<{width}}" + "".join(_cell(name, metrics[s].get(name, math.nan)) for s in segments))
    if outcome.walk is not None:
        sharpes = " ".join(f"{v:.2f}" for v in outcome.walk.fold_metrics["sharpe_ratio"])
        lines.append(f"test sharpe_ratio per fold: {sharpes}")
        lines.append("(walk-forward: each fold's test stretch was traded by a model fitted only on bars before "
                     "it; oos stitches them)" if outcome.training else "(walk-forward with the strategy's rule: "
                     "nothing is fitted, so oos re-slices one backtest into the folds' test stretches)")
    elif outcome.training:
        lines.append("(the model was fitted on train and early-stopped on val: only test is out of sample)")
    return "\n".join(lines + _closing(outcome, prepared, tracking_uri))


def _cpcv_summary(outcome: Outcome, prepared: Prepared, tracking_uri: str | None) -> str:
    from runner.evaluation.cpcv import QUANTILES, SUMMARY

    paths, plan = outcome.cpcv, outcome.cpcv.plan
    columns = ["mean", "std", *QUANTILES]
    width = max(len(m) for m in SUMMARY) + 2
    lines = [f"{'metric':<{width}}" + "".join(f"{c:>12}" for c in columns)]
    for name in SUMMARY:
        lines.append(f"{name:<{width}}" + "".join(f"{paths.distribution[f'cpcv_{name}_{c}']:>12.4f}" for c in columns))
    lines.append(f"(cpcv: {len(plan.splits)} splits of {len(plan.groups)} groups, {plan.n_paths} out-of-sample paths "
                 f"over every bar; PBO over the paths {paths.distribution['cpcv_pbo']:.2f})")
    if outcome.training is None:
        lines.append("(a rule fits nothing: every path is the same backtest, so the spread is 0)")
    return "\n".join(lines + _closing(outcome, prepared, tracking_uri))


def _closing(outcome: Outcome, prepared: Prepared, tracking_uri: str | None) -> list[str]:
    lines = [f"\n{prepared.config.selection.metric} = {outcome.selection_value:.4f}"]
    if outcome.run_id:
        lines.append(f"run id: {outcome.run_id}")
    if tracking_uri and outcome.experiment_id:
        from runner.tracking.store import ui_links

        lines += ui_links(tracking_uri, outcome.experiment_id, outcome.run_id)
    return lines
