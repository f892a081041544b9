"""One experiment: validate -> load bars -> split -> features -> train -> weights -> backtest -> log -> summary.

Everything that can be wrong with the input is checked in ``prepare`` before any MLflow run exists.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from runner import interrupts
from runner.backtest import BacktestConfig, BacktestResult, run_backtest
from runner.best_run import MODES
from runner.components import build, strategy_from_config
from runner.data import DataError, load_bars, split_bounds
from runner.training import TrainingConfig, pick_device, split_model_config

SUMMARY_METRICS = ("total_return", "cagr", "sharpe_ratio", "sortino_ratio", "max_drawdown", "calmar_ratio",
                   "exposure", "num_trades", "win_rate", "benchmark_total_return", "benchmark_sharpe_ratio")


@dataclass
class Prepared:
    """A validated experiment, ready to run."""

    config: dict[str, Any]  # resolved config (not redacted: used, never logged as is)
    strategy: Any
    backtest: BacktestConfig
    model_kwargs: dict[str, Any] | None
    training: TrainingConfig | None
    bars: pd.DataFrame
    train_end: int
    val_end: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    torch_threads: int | None = None  # set for sweep jobs sharing the CPU with other workers


@dataclass
class Outcome:
    run_id: str | None
    result: BacktestResult
    selection_value: float
    training: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def prepare(config: Mapping[str, Any]) -> Prepared:
    """Check every part of the config and load the data; raises ValueError/TypeError/LookupError."""
    started = time.perf_counter()
    selection = config["selection"]
    if selection["mode"] not in MODES:
        raise ValueError(f"selection.mode={selection['mode']!r} is not valid; allowed: {', '.join(MODES)}.")
    if config.get("strategy") is None:
        raise LookupError("no strategy given: add +strategy=NAME")
    strategy = strategy_from_config(config["strategy"])
    try:
        backtest = BacktestConfig(**config["backtest"])
    except TypeError as error:
        raise TypeError(f"backtest: {error}") from None
    model_kwargs, training = None, None
    if config["model"].get("_target_"):
        model_kwargs, training = split_model_config(config["model"])
        build(model_kwargs, "model", n_features=1)  # checks the model's own keys before any run exists
        pick_device(training.device)  # model.device=cuda without CUDA fails here, not mid-run
    seed = int(config["seed"])
    bars = load_bars(config["data"], seed=seed)
    train_end, val_end = split_bounds(len(bars), config["data"]["splits"])
    needed = strategy.warmup + (model_kwargs or {}).get("seq_len", 0) + 2
    if train_end <= needed:
        raise DataError(f"too few bars: the train segment has {train_end} bars but {type(strategy).__name__} "
                        f"needs {needed} before its first weight; use more data (data.start/data.end) or a "
                        "shorter window.")
    prepared = Prepared(dict(config), strategy, backtest, model_kwargs, training, bars, train_end, val_end, seed)
    prepared.timings["validate_and_data"] = time.perf_counter() - started
    return prepared


def compute_weights(prepared: Prepared) -> tuple[np.ndarray, Any, Any]:
    """Target weights from the strategy's classic rule, or from a model trained on the train split."""
    close = prepared.bars["close"].to_numpy()
    if prepared.model_kwargs is None:
        return prepared.strategy.target_weights(close), None, None
    from runner.training import build_dataset, forecast, train_model

    features = prepared.strategy.features(prepared.bars)
    seq_len = int(prepared.model_kwargs.get("seq_len", 0))
    dataset = build_dataset(features, close, prepared.train_end, prepared.val_end, seq_len)
    n_features = dataset.features.shape[1]
    training = train_model(lambda: build(prepared.model_kwargs, "model", n_features=n_features), dataset,
                           prepared.training, prepared.seed, threads=prepared.torch_threads)
    forecasts = forecast(training.model, dataset)
    return prepared.strategy.weights_from_forecast(forecasts), training, dataset


def execute(prepared: Prepared, logger: Any = None, log_extras: Any = None) -> Outcome:
    """Run the experiment; with a logger, log everything into its active run."""
    timings = dict(prepared.timings)
    started = time.perf_counter()
    weights, training, dataset = compute_weights(prepared)
    timings["train"] = time.perf_counter() - started
    interrupts.check()
    started = time.perf_counter()
    bars = prepared.bars
    result = run_backtest(bars["close"].to_numpy(), weights, prepared.train_end, prepared.val_end,
                          prepared.backtest, bars.index)
    timings["backtest"] = time.perf_counter() - started
    selection = prepared.config["selection"]
    value = result.flat_metrics().get(selection["metric"], math.nan)
    outcome = Outcome(logger.run_id if logger else None, result, float(value), training, timings)
    if logger is not None:
        from runner.run_logging import log_outcome

        log_outcome(logger, prepared, outcome, dataset, log_extras)
    return outcome


def summary(outcome: Outcome, prepared: Prepared, tracking_uri: str | None = None) -> str:
    """A compact per-segment table of the main metrics, the run id and how to open it."""
    metrics = outcome.result.metrics
    segments = [s for s in ("train", "val", "test") if s in metrics]
    width = max(len(m) for m in SUMMARY_METRICS) + 2
    lines = [f"{'metric':<{width}}" + "".join(f"{s + (' (in-sample)' if s == 'train' and outcome.training else ''):>22}"
                                             for s in segments)]
    for name in SUMMARY_METRICS:
        cells = "".join(f"{metrics[s].get(name, math.nan):>22.4f}" for s in segments)
        lines.append(f"{name:<{width}}{cells}")
    selection = prepared.config["selection"]
    lines.append(f"\n{selection['metric']} = {outcome.selection_value:.4f}")
    if outcome.run_id:
        lines.append(f"run id: {outcome.run_id}")
    if tracking_uri:
        from runner.params import redact_uri

        lines.append(f"open it: mlflow ui --backend-store-uri {redact_uri(tracking_uri)}")
    timing = ", ".join(f"{k} {v:.2f}s" for k, v in outcome.timings.items())
    lines.append(f"time: {timing}")
    return "\n".join(lines)
