"""Seeded training with early stopping on the validation loss, and forecasts from the trained model."""

from __future__ import annotations

import copy
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.config.schema import TrainerConf
from runner.errors import ConfigError
from runner.ml.dataset import Dataset

if TYPE_CHECKING:
    import torch


@dataclass
class TrainingResult:
    model: torch.nn.Module
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    seconds: float = 0.0
    device: str = "cpu"


def pick_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device=cuda but CUDA is not available here; use trainer.device=auto or cpu.")
    return "cuda" if requested == "auto" and torch.cuda.is_available() else requested.replace("auto", "cpu")


def seed_everything(seed: int) -> None:
    import torch

    # cuBLAS is only deterministic with a fixed workspace; it reads this when its first handle is made.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _tensors(data: Dataset, split: str, device: str) -> tuple[Any, Any]:
    import torch

    rows = data.rows[split]
    return (torch.as_tensor(data.inputs(rows), device=device),
            torch.as_tensor(data.target[rows], dtype=torch.float32, device=device))


def _train_epoch(model: torch.nn.Module, optimiser: Any, x: Any, y: Any, batch_size: int, generator: Any,
                 check_stop: Callable[[], None]) -> float:
    """One pass over the shuffled training rows; returns the mean training loss."""
    import torch

    model.train()
    order = torch.randperm(len(x), generator=generator).to(x.device)
    total = 0.0
    for begin in range(0, len(order), batch_size):
        check_stop()
        batch = order[begin:begin + batch_size]
        optimiser.zero_grad()
        loss = torch.mean((model(x[batch]) - y[batch]) ** 2)
        loss.backward()
        optimiser.step()
        total += loss.item() * len(batch)
    return total / max(len(order), 1)


def _loss(model: torch.nn.Module, x: Any, y: Any) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float(torch.mean((model(x) - y) ** 2))


def train_model(build: Callable[[], Any], data: Dataset, config: TrainerConf, seed: int,
                threads: int | None = None, check_stop: Callable[[], None] = lambda: None,
                label: str = "") -> TrainingResult:
    """Adam with weight decay on mini-batches; early stopping on val loss; the best weights restored.

    ``build`` makes the network (called after seeding, so its initial weights are seeded too);
    ``threads`` caps torch's CPU threads (jobs sharing the cores); ``check_stop`` raises to stop early; ``label``
    says which of several models this is (``split 3/15``) in the line it prints.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    device = pick_device(config.device)
    model = build().to(device)
    x_train, y_train = _tensors(data, "train", device)
    x_val, y_val = _tensors(data, "val", device)
    if len(x_val) == 0:
        raise ConfigError("the validation segment has no usable rows, so early stopping cannot pick an epoch; "
                         "give data.splits a validation fraction, e.g. [0.6, 0.2, 0.2].")
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best_loss, best_epoch, best_state, waited = float("inf"), 0, copy.deepcopy(model.state_dict()), 0
    from tqdm import tqdm

    # A bar on a terminal only (it would be noise in logs); one summary line either way.
    bar = tqdm(total=config.epochs, desc="training", unit="epoch", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty(), dynamic_ncols=True)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        history["train_loss"].append(_train_epoch(model, optimiser, x_train, y_train, config.batch_size, generator,
                                                  check_stop))
        val_loss = _loss(model, x_val, y_val)
        history["val_loss"].append(val_loss)
        bar.set_postfix(train_loss=f"{history['train_loss'][-1]:.4f}", val_loss=f"{val_loss:.4f}", refresh=False)
        bar.update()
        if val_loss < best_loss:
            best_loss, best_epoch, waited = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    bar.close()
    seconds = time.perf_counter() - start
    stopped = " (early stop)" if len(history["val_loss"]) < config.epochs else ""
    print(f"{f'[{label}] ' if label else ''}trained {len(history['val_loss'])} epoch(s){stopped} on {device}; best "
          f"epoch {best_epoch}, val_loss "
          f"{best_loss:.4f}", file=sys.stderr)  # its time: verbose=true (or the run's train_seconds metric)
    model.load_state_dict(best_state)
    model.eval()
    return TrainingResult(model.cpu(), history, best_epoch, seconds, device)


def forecast(model: torch.nn.Module, data: Dataset) -> np.ndarray:
    """The model's forecast for every bar with complete features (NaN elsewhere), in target units."""
    import torch

    out = np.full(len(data.features), np.nan)
    rows = data.rows["all"]
    if len(rows):
        with torch.no_grad():
            out[rows] = model(torch.as_tensor(data.inputs(rows))).numpy()
    return out
