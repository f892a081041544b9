"""Training cost per model on the S&P 500 data: seconds per epoch and in total, on CPU (and CUDA if present).

    python bench/training.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from runner.config.schema import TrainerConf
from runner.data.loader import load_data
from runner.data.series import split_bounds
from runner.ml.dataset import build_panel_dataset
from runner.ml.models import LinearForecaster, LSTMForecaster, MLPForecaster
from runner.ml.training import train_model
from strategies.momentum import Momentum

MODELS = {"linear": (LinearForecaster, {}, 0), "mlp": (MLPForecaster, {"hidden_sizes": [32, 16]}, 0),
          "lstm": (LSTMForecaster, {"hidden_size": 16, "num_layers": 1, "seq_len": 20}, 20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    sp500 = {"_target_": "runner.data.sources.BundledSeries", "series": "sp500", "splits": [0.6, 0.2, 0.2]}
    bars = load_data(sp500).bars
    train_end, val_end = split_bounds(len(bars), [0.6, 0.2, 0.2])
    features = Momentum(lookback=20).features(bars)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    close = bars["close"].to_numpy()[:, None]
    warm = build_panel_dataset([features], close, train_end, val_end, 0)
    for device in devices:  # first-call costs (thread pools, CUDA context) are not training time
        train_model(functools.partial(MLPForecaster, warm.features.shape[1]), warm,
                    TrainerConf(epochs=1, device=device), 0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CUDA available: {torch.cuda.is_available()}")
    print(f"{'model':<7} {'device':<6} {'train rows':>10} {'epochs run':>10} {'s/epoch':>9} {'total s':>8}")
    for name, (cls, kwargs, seq_len) in MODELS.items():
        data = build_panel_dataset([features], close, train_end, val_end, seq_len)
        for device in devices:
            config = TrainerConf(epochs=args.epochs, batch_size=128, patience=args.epochs, device=device)
            start = time.perf_counter()
            n_features = data.features.shape[1]
            result = train_model(functools.partial(cls, n_features, **kwargs), data, config, 0)
            total = time.perf_counter() - start
            epochs = len(result.history["train_loss"])
            print(f"{name:<7} {device:<6} {len(data.rows['train']):>10} {epochs:>10} {total / epochs:>9.3f} "
                  f"{total:>8.2f}")


if __name__ == "__main__":
    main()
