"""Training: seeded, leakage-free, early stopping, and models that learn a learnable signal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from runner.config.schema import TrainerConf
from runner.ml.dataset import build_panel_dataset
from runner.ml.models import LinearForecaster, LSTMForecaster, MLPForecaster
from runner.ml.training import forecast, train_model
from strategies.momentum import Momentum
from tests.conftest import data_config


def ar_close(n: int = 1500, phi: float = 0.4, seed: int = 0) -> np.ndarray:
    """Prices whose next return depends on the last one: a model on ret_1 can learn it."""
    rng = np.random.default_rng(seed)
    returns = np.zeros(n)
    for t in range(1, n):
        returns[t] = phi * returns[t - 1] + 0.01 * rng.standard_normal()
    return 100 * np.cumprod(1 + returns)


def dataset(close: np.ndarray, seq_len: int = 0):
    bars = pd.DataFrame({"close": close})
    features = Momentum(lookback=5).features(bars)
    return build_panel_dataset([features], close[:, None], int(0.6 * len(close)), int(0.8 * len(close)), seq_len)


FAST = TrainerConf(epochs=8, batch_size=64, lr=3e-3, patience=3, device="cpu")


def test_same_seed_same_weights_and_forecasts() -> None:
    data = dataset(ar_close())
    a = train_model(lambda: MLPForecaster(data.features.shape[1]), data, FAST, seed=3)
    b = train_model(lambda: MLPForecaster(data.features.shape[1]), data, FAST, seed=3)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    np.testing.assert_array_equal(forecast(a.model, data), forecast(b.model, data))


def test_val_and_test_prices_cannot_change_the_trained_weights() -> None:
    close = ar_close()
    n = len(close)
    perturbed = close.copy()
    perturbed[int(0.6 * n):] *= np.exp(np.cumsum(0.02 * np.random.default_rng(9).standard_normal(n - int(0.6 * n))))
    base, pert = dataset(close), dataset(perturbed)
    np.testing.assert_array_equal(base.mean, pert.mean)  # train statistics only
    np.testing.assert_array_equal(base.rows["train"], pert.rows["train"])
    assert base.rows["train"].max() < int(0.6 * n) - 1  # the last train row's target lies in val: dropped
    # Val prices may choose which epoch is restored (that is early stopping), never what an epoch learns:
    # every epoch's training loss is the same, and a one-epoch model (nothing to choose) is the same model.
    config = TrainerConf(epochs=3, batch_size=64, patience=5, device="cpu")
    a = train_model(lambda: MLPForecaster(base.features.shape[1]), base, config, seed=1)
    b = train_model(lambda: MLPForecaster(pert.features.shape[1]), pert, config, seed=1)
    assert a.history["train_loss"] == b.history["train_loss"] and a.history["val_loss"] != b.history["val_loss"]
    one = TrainerConf(epochs=1, batch_size=64, patience=5, device="cpu")
    a = train_model(lambda: MLPForecaster(base.features.shape[1]), base, one, seed=1)
    b = train_model(lambda: MLPForecaster(pert.features.shape[1]), pert, one, seed=1)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_early_stopping_restores_the_best_epoch() -> None:
    data = dataset(ar_close(800))
    config = TrainerConf(epochs=40, batch_size=32, lr=0.05, patience=2, device="cpu")
    result = train_model(lambda: MLPForecaster(data.features.shape[1], hidden_sizes=[64, 64], dropout=0.0), data,
                         config, seed=0)
    losses = result.history["val_loss"]
    assert len(losses) < 40 and result.best_epoch == int(np.argmin(losses))
    x = torch.as_tensor(data.inputs(data.rows["val"]))
    y = torch.as_tensor(data.target[data.rows["val"]], dtype=torch.float32)
    with torch.no_grad():
        restored = float(torch.mean((result.model(x) - y) ** 2))
    assert restored == pytest.approx(min(losses), rel=1e-6)


@pytest.mark.parametrize("model_cls,kwargs,seq_len", [(LinearForecaster, {}, 0),
                                                      (MLPForecaster, {"hidden_sizes": [16]}, 0),
                                                      (LSTMForecaster, {"hidden_size": 8, "seq_len": 5}, 5)])
def test_each_model_beats_a_zero_forecast(model_cls, kwargs, seq_len) -> None:
    data = dataset(ar_close(), seq_len)
    result = train_model(lambda: model_cls(data.features.shape[1], **kwargs), data,
                         TrainerConf(epochs=15, batch_size=64, lr=5e-3, patience=5, device="cpu"), seed=0)
    zero_loss = float(np.mean(data.target[data.rows["val"]] ** 2))
    assert min(result.history["val_loss"]) < 0.95 * zero_loss


def test_lstm_windows_never_reach_before_the_data() -> None:
    data = dataset(ar_close(300), seq_len=10)
    assert data.rows["all"].min() >= 9 + 5  # 5 bars of feature warm-up, then a full 10-bar window
    assert data.inputs(data.rows["all"][:3]).shape == (3, 10, data.features.shape[1])


def test_reloaded_model_predicts_identically(tracking_uri: str) -> None:
    from runner.logger import MLflowLogger
    from runner.tracking.model_io import load_torch_model

    data = dataset(ar_close(600))
    result = train_model(lambda: MLPForecaster(data.features.shape[1]), data, FAST, seed=0)
    logger = MLflowLogger("models", tracking_uri)
    with logger:
        uri = logger.log_model(result.model, "model", input_example=result.model.example_input(2))
    reloaded = load_torch_model(uri)
    x = torch.as_tensor(data.inputs(data.rows["test"]))
    torch.testing.assert_close(reloaded(x), result.model(x), rtol=0, atol=0)


def test_model_path_uses_no_later_bar() -> None:
    """The whole model path (features, standardisation, training, forecasts, weights): perturbing every
    column of the bars after a bar k inside the test segment leaves every weight before k unchanged."""
    import dataclasses

    from runner.data.universe import Universe
    from runner.evaluation.experiment import prepare, target_weights

    config = {"selection": {"metric": "val_sharpe_ratio", "mode": "max"}, "seed": 3,
              "strategy": {"_target_": "strategies.momentum.Momentum", "lookback": 10, "long_only": False},
              "backtest": {}, "trainer": {"epochs": 3, "device": "cpu"},
              "model": {"_target_": "runner.ml.models.MLPForecaster", "_partial_": True, "hidden_sizes": [8]},
              "data": data_config("synthetic", seed=3, n_bars=700),
              "evaluation": {"_target_": "runner.evaluation.holdout.HoldoutEvaluation"}, "tracking": {}}
    prepared = prepare(config)
    k = prepared.val_end + 40
    rng = np.random.default_rng(4)
    perturbed = prepared.book.bars.copy()
    perturbed.iloc[k:] *= np.exp(0.05 * rng.standard_normal((len(perturbed) - k, 1)))
    base, _, _ = target_weights(prepared)
    moved, _, _ = target_weights(dataclasses.replace(prepared, book=Universe.from_series(perturbed, "synthetic")))
    np.testing.assert_array_equal(base[:k], moved[:k])
    assert (base != 0).any() and (base < 0).any()
