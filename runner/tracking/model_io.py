"""Saving and loading torch models through MLflow in the safe ``pt2`` format."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigTypeError

if TYPE_CHECKING:
    import torch


def pip_requirements() -> list[str]:
    """Explicit requirements: without them MLflow infers them, which takes seconds per model."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}"]


def example_input(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    """An input example inferred from the model's first layer (pt2 needs one to trace the graph).

    Batch 2, not 1: torch.export specialises size-1 dimensions, and the batch must stay dynamic.
    """
    import torch

    hint = getattr(model, "example_input", None)
    if callable(hint):
        return hint(batch)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            return torch.zeros(batch, module.in_features)
        if isinstance(module, (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN)):
            return torch.zeros(batch, 8, module.input_size)
        if isinstance(module, torch.nn.Conv1d):
            return torch.zeros(batch, module.in_channels, 16)
    raise ConfigTypeError(
        f"cannot infer an input example for {type(model).__name__}: pass input_example= to log_model."
    )


def _model_kwargs(model: torch.nn.Module, input_example: Any) -> dict[str, Any]:
    import torch

    example = example_input(model) if input_example is None else input_example
    if not isinstance(example, torch.Tensor):
        example = torch.as_tensor(example, dtype=torch.float32)
    return {"input_example": example.detach().cpu().numpy(), "serialization_format": "pt2",
            "pip_requirements": pip_requirements()}


def log_torch_model(model: torch.nn.Module, artifact_path: str, input_example: Any = None) -> None:
    """Log to MLflow's active run (``mlflow.pytorch.log_model``, pt2, explicit requirements)."""
    import mlflow.pytorch

    was_training = model.training
    model = model.cpu().eval()
    try:
        with export_warnings_handled():
            mlflow.pytorch.log_model(model, name=artifact_path, **_model_kwargs(model, input_example))
    finally:
        model.train(was_training)


@contextlib.contextmanager
def export_warnings_handled() -> Iterator[None]:
    """torch.export warns that nn.LSTM's ``_flat_weights`` "were assigned during export": torch's own LSTM
    keeps them as plain attributes, nothing a model here can register, and the exported program is correct
    (tests reload it and compare predictions). Only that message, only while exporting."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The tensor attributes self\.\w+\._flat_weights",
                                category=UserWarning)
        yield


def save_torch_model(model: torch.nn.Module, path: str, input_example: Any = None) -> None:
    """The same model files in a local folder (``mlflow.pytorch.save_model``), to be uploaded later."""
    import mlflow.pytorch

    was_training = model.training
    model = model.cpu().eval()
    try:
        with export_warnings_handled():
            mlflow.pytorch.save_model(model, path, **_model_kwargs(model, input_example))
    finally:
        model.train(was_training)


def load_torch_model(model_uri: str, tracking_uri: str | None = None) -> torch.nn.Module:
    """Load a logged model with pickle deserialisation disabled (a crafted pickle is refused).

    ``runs:/`` URIs resolve against ``tracking_uri`` (default: MLFLOW_TRACKING_URI, then the project
    store), never against whatever store an earlier logger in this process made MLflow's global one.
    """
    import mlflow.pytorch

    from runner.tracking.store import resolve_tracking_uri

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    return mlflow.pytorch.load_model(model_uri)
