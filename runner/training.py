"""Dataset building (no leakage across splits), seeded training with early stopping, and forecasts."""

from __future__ import annotations

import copy
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from runner import interrupts

TRAINING_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "patience", "device")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainingConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5
    device: str = "auto"

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patience"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"model.{key} must be >= 1, got {getattr(self, key)}.")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"model.lr must be > 0 and model.weight_decay >= 0, got {self.lr}, {self.weight_decay}.")
        if self.device not in DEVICES:
            raise ValueError(f"model.device={self.device!r} is not valid; allowed: {', '.join(DEVICES)}.")


@dataclass
class Dataset:
    """Standardised features per bar, next-bar targets and the rows each split may train on."""

    features: np.ndarray  # (n_bars, n_features), standardised with train statistics; NaN where undefined
    target: np.ndarray  # r[t+1] / target_scale; NaN on the last bar
    rows: dict[str, np.ndarray]  # usable row indices per split (target inside the same split)
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


def build_dataset(features: pd.DataFrame, close: np.ndarray, train_end: int, val_end: int,
                  seq_len: int = 0) -> Dataset:
    """Targets are next-bar returns; a row trains only if its target lies in its own split (so the last
    train row, whose target is the first val return, is dropped; likewise the last val row)."""
    values = features.to_numpy(dtype=float)
    n = len(values)
    target = np.full(n, np.nan)
    target[:-1] = close[1:] / close[:-1] - 1.0
    defined = np.isfinite(values).all(axis=1)
    if seq_len:  # a window is usable only if all its rows are defined and it starts at bar >= 0
        window_ok = np.convolve(defined.astype(float), np.ones(seq_len), mode="full")[:n] >= seq_len
        defined = window_ok & (np.arange(n) >= seq_len - 1)
    fit_rows = np.flatnonzero(defined[: train_end - 1] & np.isfinite(target[: train_end - 1]))
    if len(fit_rows) < 10:
        raise ValueError(f"only {len(fit_rows)} train rows have complete features; use more data or a shorter "
                         "strategy window (the model needs at least 10).")
    raw_train = values[: train_end - 1][np.isfinite(values[: train_end - 1]).all(axis=1)]
    mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
    std[std == 0] = 1.0
    scale = float(np.std(target[fit_rows])) or 1.0
    bounds = {"train": (0, train_end - 1), "val": (train_end, val_end - 1), "test": (val_end, n)}
    rows = {name: np.arange(a, b)[defined[a:b] & np.isfinite(target[a:b])] for name, (a, b) in bounds.items()}
    rows["all"] = np.flatnonzero(defined)
    standardised = np.nan_to_num((values - mean) / std, nan=0.0).astype(np.float32)
    return Dataset(standardised, target / scale, rows, mean, std, scale, list(features.columns), seq_len)


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.device=cuda but CUDA is not available here; use model.device=auto or cpu.")
    return "cuda" if requested == "auto" and torch.cuda.is_available() else requested.replace("auto", "cpu")


def seed_everything(seed: int) -> None:
    import torch

    # cuBLAS is only deterministic with a fixed workspace; it reads this when its first handle is made.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class TrainingResult:
    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"


def train_model(model: Any, data: Dataset, config: TrainingConfig, seed: int,
                threads: int | None = None) -> TrainingResult:
    """Adam with weight decay on mini-batches; early stopping on val loss; the best weights restored.

    ``model`` is a zero-argument builder (seeded here before it initialises its weights) or a module;
    ``threads`` caps torch's CPU threads (sweep workers sharing the cores).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    if not isinstance(model, torch.nn.Module):
        model = model()
    device = pick_device(config.device)
    model = model.to(device)
    x_train = torch.as_tensor(data.inputs(data.rows["train"]), device=device)
    y_train = torch.as_tensor(data.target[data.rows["train"]], dtype=torch.float32, device=device)
    x_val = torch.as_tensor(data.inputs(data.rows["val"]), device=device)
    y_val = torch.as_tensor(data.target[data.rows["val"]], dtype=torch.float32, device=device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best_loss, best_epoch, best_state, waited = float("inf"), 0, copy.deepcopy(model.state_dict()), 0
    show = sys.stderr.isatty()
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        total = 0.0
        for begin in range(0, len(order), config.batch_size):
            interrupts.check()  # a stop request whose signal-time exception was swallowed still stops here
            batch = order[begin:begin + config.batch_size]
            optimiser.zero_grad()
            loss = torch.mean((model(x_train[batch]) - y_train[batch]) ** 2)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            val_loss = float(torch.mean((model(x_val) - y_val) ** 2)) if len(x_val) else float("nan")
        history["train_loss"].append(total / max(len(order), 1))
        history["val_loss"].append(val_loss)
        if show:
            print(f"\repoch {epoch + 1}/{config.epochs} train_loss={history['train_loss'][-1]:.4f} "
                  f"val_loss={val_loss:.4f}", end="", file=sys.stderr, flush=True)
        if val_loss < best_loss:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    if show:
        print(file=sys.stderr)
    model.load_state_dict(best_state)
    model.eval()
    return TrainingResult(model.cpu(), history, best_epoch, time.perf_counter() - start, device)


def forecast(model: Any, data: Dataset) -> np.ndarray:
    """The model's forecast for every bar with complete features (NaN elsewhere), in target units."""
    import torch

    out = np.full(len(data.features), np.nan)
    rows = data.rows["all"]
    if len(rows):
        with torch.no_grad():
            out[rows] = model(torch.as_tensor(data.inputs(rows))).numpy()
    return out


def split_model_config(model_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], TrainingConfig]:
    """(constructor kwargs incl. ``_target_``, training config) from the flat ``model`` group."""
    items = dict(model_cfg)
    training = TrainingConfig(**{k: items.pop(k) for k in TRAINING_KEYS if k in items})
    return items, training
