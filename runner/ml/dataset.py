"""Model inputs without leakage: standardised trailing features, next-bar targets, rows per split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runner.errors import ConfigError

MIN_TRAIN_ROWS = 10


@dataclass
class Dataset:
    """Standardised features per bar, next-bar targets and the rows each split may train on."""

    features: np.ndarray  # (n_bars, n_features), standardised with train statistics; 0 where undefined
    target: np.ndarray  # r[t+1] / target_scale; NaN on the last bar
    rows: dict[str, np.ndarray]  # usable row indices per split (target inside the same split), and "all"
    mean: np.ndarray
    std: np.ndarray
    target_scale: float
    names: list[str]
    seq_len: int = 0

    def inputs(self, rows: np.ndarray) -> np.ndarray:
        """Model inputs for bars ``rows``: one feature row, or the window of seq_len rows ending there."""
        if not self.seq_len:
            return self.features[rows]
        offsets = np.arange(-self.seq_len + 1, 1)
        return self.features[rows[:, None] + offsets[None, :]]

    def standardisation(self) -> dict[str, Any]:
        return {"features": self.names, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "target_scale": self.target_scale, "seq_len": self.seq_len,
                "target": "next bar's return close[t+1]/close[t]-1, divided by target_scale"}


def usable_rows(values: np.ndarray, seq_len: int) -> np.ndarray:
    """Bars whose input is fully defined: its feature row, or all rows of its window (which starts at >= 0)."""
    defined = np.isfinite(values).all(axis=1)
    if not seq_len:
        return defined
    window_complete = np.convolve(defined.astype(float), np.ones(seq_len), mode="full")[: len(values)] >= seq_len
    return window_complete & (np.arange(len(values)) >= seq_len - 1)


def build_panel_dataset(features: list[pd.DataFrame], close: np.ndarray, train_end: int, val_end: int,
                        seq_len: int = 0) -> Dataset:
    """One dataset pooling the book's assets (one, for a series): each asset's feature rows (on the book's
    timeline) stacked asset after asset, ``seq_len`` empty rows between them so that no window spans two assets;
    targets are each asset's next-bar return (NaN where it has no price). A row trains only if its target lies
    in its own split (so the last train row, whose target is the first val return, is dropped; likewise the
    last val row). Standardised with the train rows of every asset; ``forecast`` rows reshape back with
    ``panel_forecast``."""
    bar = np.arange(len(close))
    return masked_panel_dataset(features, close, bar < train_end - 1, (bar >= train_end) & (bar < val_end - 1),
                                bar >= val_end, seq_len)


def masked_panel_dataset(features: list[pd.DataFrame], close: np.ndarray, fit: np.ndarray, val: np.ndarray,
                         test: np.ndarray, seq_len: int = 0) -> Dataset:
    """``build_panel_dataset`` with the bars of each split given as boolean masks over the bars (any pattern, as
    combinatorial cross-validation needs): rows fit where ``fit`` is true, early-stop where ``val`` is, and the
    mask says which bars' targets a row may use (the caller leaves out a split's last bar before another one).
    Standardised with the complete ``fit`` rows of every asset."""
    n, pad = len(close), max(seq_len, 1)
    width = n + pad
    values, on_bar = stacked_features(features, n, seq_len)
    target = np.full(len(values), np.nan)
    for i in range(len(features)):
        target[i * width:i * width + n - 1] = close[1:, i] / close[:-1, i] - 1.0
    defined = usable_rows(values, seq_len) & np.isfinite(target)
    masks = {name: np.tile(np.r_[mask, np.zeros(pad, dtype=bool)], len(features))
             for name, mask in (("train", fit), ("val", val), ("test", test))}
    rows = {name: np.flatnonzero(defined & mask) for name, mask in masks.items()}
    if len(rows["train"]) < MIN_TRAIN_ROWS:
        raise ConfigError(f"only {len(rows['train'])} train rows have complete features; use more data or a shorter "
                          f"strategy window (the model needs at least {MIN_TRAIN_ROWS}).")
    complete = values[masks["train"] & np.isfinite(values).all(axis=1)]
    mean, std = complete.mean(axis=0), complete.std(axis=0)
    std[std == 0] = 1.0
    scale = float(np.std(target[rows["train"]])) or 1.0
    rows["all"] = np.flatnonzero(usable_rows(values, seq_len) & on_bar)
    return Dataset(standardised(values, mean, std), target / scale, rows, mean, std, scale, list(features[0].columns),
                   seq_len)


def stacked_features(features: list[pd.DataFrame], n_bars: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Each asset's feature rows stacked asset after asset, ``max(seq_len, 1)`` empty rows between them (no window
    spans two assets); ``(values, on_bar)``, ``on_bar`` False on the empty rows."""
    width = n_bars + max(seq_len, 1)
    values = np.full((len(features) * width, features[0].shape[1]), np.nan)
    for i, frame in enumerate(features):
        values[i * width:i * width + n_bars] = frame.to_numpy(dtype=float)
    return values, np.tile(np.arange(width), len(features)) < n_bars


def standardised(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """What a model reads: ``(x - mean) / std`` with the training's statistics, 0 where undefined, float32."""
    return np.nan_to_num((values - mean) / std, nan=0.0).astype(np.float32)


def inference_dataset(features: list[pd.DataFrame], standardisation: dict[str, Any]) -> Dataset:
    """New bars' model inputs standardised with a training's statistics (``Dataset.standardisation()``), laid out as
    ``build_panel_dataset`` lays them out: ``rows["all"]`` are the bars with a complete input, no targets."""
    n, seq_len = len(features[0]), int(standardisation["seq_len"])
    names = [str(c) for c in features[0].columns]
    if names != list(standardisation["features"]):
        raise ValueError(f"the strategy computes features {names}, but the model was trained on "
                         f"{list(standardisation['features'])}")
    values, on_bar = stacked_features(features, n, seq_len)
    mean, std = np.asarray(standardisation["mean"], float), np.asarray(standardisation["std"], float)
    rows = {"all": np.flatnonzero(usable_rows(values, seq_len) & on_bar)}
    return Dataset(standardised(values, mean, std), np.full(len(values), np.nan), rows, mean, std,
                   float(standardisation["target_scale"]), names, seq_len)


def panel_forecast(forecasts: np.ndarray, n_bars: int, n_assets: int) -> np.ndarray:
    """Stacked per-row forecasts back to (bars, assets)."""
    return forecasts.reshape(n_assets, -1)[:, :n_bars].T
