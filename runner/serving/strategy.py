"""A run's whole strategy as an MLflow model: raw OHLCV bars in, the weight to hold after each bar's close out.

What travels in the model (``strategy.json``): the strategy's config, the book's leverage cap, a universe's
alignment rules; with a model, the training's standardisation and the network (``pt2``). The weights are computed
by the code a backtest uses (``Universe``, ``Strategy.portfolio_weights``, ``runner.ml.dataset``, the engine's
``holdings``), so a served weight equals the backtest's ``weight`` on the same bars (with ``backtest.rebalance=1``;
with a schedule, the served weight is the target a rebalance trades to). ``StrategyModel`` is MLflow's
``PythonModel``; ``runner.serving.model_code`` is the file MLflow's models-from-code loads it from (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModelContext  # at run time: MLflow reads predict's type hints when the class is made

if TYPE_CHECKING:
    import torch
    from mlflow.models import ModelSignature

    from runner.data.universe import Universe
    from strategies.base import Strategy

SPEC_FILE = "strategy.json"
STANDARDISATION_FILE = "standardisation.json"
OHLCV = ("open", "high", "low", "close", "volume")
WHERE = "the model's input bars"


def signature(universe: bool) -> ModelSignature:
    """Columns in: ``date`` (and ``symbol`` for a universe), close and the optional OHLCV; out: the same keys
    and ``weight``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    keys = [ColSpec("datetime", "date")] + ([ColSpec("string", "symbol")] if universe else [])
    bars = [ColSpec("double", name, required=name == "close") for name in OHLCV]
    return ModelSignature(inputs=Schema(keys + bars), outputs=Schema(keys + [ColSpec("double", "weight")]))


def book_from_bars(frame: pd.DataFrame, spec: Mapping[str, Any]) -> Universe:
    """The input bars as the book a run trades: one series, or a universe's long bars (date, symbol, OHLCV) split
    per symbol, resampled and aligned with the run's own rules."""
    from runner.data.series import index_by_date, normalise_ohlcv
    from runner.data.universe import Universe, align, check_spacings, resample, split_long

    dated = index_by_date(frame, None, WHERE)
    name = str(spec["data_name"])
    if spec.get("universe") is None:
        return Universe.from_series(normalise_ohlcv(dated, WHERE), name)
    rules = spec["universe"]
    frames = split_long(dated, WHERE)
    if rules.get("resample"):
        frames = {symbol: resample(bars, rules["resample"]) for symbol, bars in frames.items()}
    check_spacings(frames, name)
    return align(frames, int(rules["max_fill"]), name)


def long_bars(book: Universe) -> pd.DataFrame:
    """A book's own bars as the model's input: ``date`` and OHLCV (a universe: with ``symbol``, one row per asset's
    bar, no filled rows), the inverse of ``book_from_bars``."""
    def dated(bars: pd.DataFrame) -> pd.DataFrame:
        return bars.rename_axis("date").reset_index()

    if book.series:
        return dated(book.bars)
    return pd.concat([dated(book.frames[s]).assign(symbol=s) for s in book.symbols], ignore_index=True)


def book_weights(strategy: Strategy, book: Universe, max_leverage: float, network: torch.nn.Module | None = None,
                 standardisation: Mapping[str, Any] | None = None) -> np.ndarray:
    """The weights held after each bar's close (bars x assets): the strategy's rule, or the network's forecasts
    from the standardised features through it; the leverage cap and untradable assets as the engine applies them.
    Warm-up bars hold 0."""
    from runner.engine.portfolio import holdings

    if network is None:
        targets = strategy.portfolio_weights(book)
    else:
        from runner.ml.dataset import inference_dataset, panel_forecast
        from runner.ml.training import forecast

        dataset = inference_dataset(book.features(strategy.features), dict(standardisation or {}))
        forecasts = panel_forecast(forecast(network, dataset), len(book.index), book.n_assets)
        targets = strategy.portfolio_weights_from_forecast(forecasts, book)
    held, _, _ = holdings(np.asarray(targets, dtype=np.float64).reshape(len(book.index), -1), book.close,
                          max_leverage, None)
    return held


def weights_frame(book: Universe, weights: np.ndarray, universe: bool) -> pd.DataFrame:
    """One row per bar (``date, weight``), or per bar and symbol where the symbol has a price (``date, symbol,
    weight``)."""
    if not universe:
        return pd.DataFrame({"date": book.index, "weight": weights[:, 0]})
    bars, assets = np.nonzero(book.tradable())
    return pd.DataFrame({"date": book.index[bars], "symbol": np.asarray(book.symbols, dtype=object)[assets],
                         "weight": weights[bars, assets]})


class StrategyModel(mlflow.pyfunc.PythonModel):
    """The served strategy: ``predict`` takes raw bars and returns the weight to hold after each bar."""

    def load_context(self, context: PythonModelContext) -> None:
        from runner.evaluation.experiment import build_strategy

        self.spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.strategy = build_strategy(self.spec["strategy"])
        self.network, self.standardisation = None, None
        if "network" in context.artifacts:
            import mlflow.pytorch

            self.network = mlflow.pytorch.load_model(context.artifacts["network"])
            self.standardisation = json.loads(Path(context.artifacts["standardisation"]).read_text())

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        book = book_from_bars(model_input, self.spec)
        weights = book_weights(self.strategy, book, float(self.spec["max_leverage"]), self.network,
                               self.standardisation)
        return weights_frame(book, weights, self.spec.get("universe") is not None)
