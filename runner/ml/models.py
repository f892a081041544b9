"""Small torch forecasters of the next bar's (scaled) return from standardised trailing features.

Each takes ``n_features`` plus its own YAML keys, maps a float tensor to one forecast per row, and can
make an example input (``example_input``) so MLflow's pt2 export can trace it. A sequence model declares
``sequence_length``: it reads that many feature rows ending at bar t (the others read one row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from runner.config.schema import Doc
from runner.errors import ConfigError


class LinearForecaster(nn.Module):
    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = n_features
        self.linear = nn.Linear(n_features, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros(batch, self.n_features)


class MLPForecaster(nn.Module):
    def __init__(self, n_features: int,
                 hidden_sizes: Annotated[Sequence[int], Doc("widths of the hidden layers, input side first", "units",
                                                            "a non-empty list of ints >= 1")] = (32, 16),
                 dropout: Annotated[float, Doc("dropout after each hidden layer", "probability", "[0, 1)")] = 0.1,
                 ) -> None:
        super().__init__()
        if not hidden_sizes or any(int(h) < 1 for h in hidden_sizes):
            raise ConfigError(f"model.hidden_sizes must be a non-empty list of sizes >= 1, got {list(hidden_sizes)}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}.")
        self.n_features = n_features
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, int(size)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(size)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(-1)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros(batch, self.n_features)


class LSTMForecaster(nn.Module):
    """Reads a window of ``seq_len`` feature rows ending at bar t: input (batch, seq_len, n_features)."""

    def __init__(self, n_features: int,
                 hidden_size: Annotated[int, Doc("width of the LSTM's hidden state", "units", ">= 1")] = 16,
                 num_layers: Annotated[int, Doc("stacked LSTM layers", "layers", ">= 1")] = 1,
                 seq_len: Annotated[int, Doc("feature rows read per forecast, ending at bar t", "bars", ">= 2")] = 20,
                 ) -> None:
        super().__init__()
        for key, value, low in (("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
                                ("seq_len", seq_len, 2)):
            if int(value) < low:
                raise ConfigError(f"model.{key} must be >= {low}, got {value}.")
        self.n_features, self.sequence_length = n_features, int(seq_len)
        self.lstm = nn.LSTM(n_features, int(hidden_size), int(num_layers), batch_first=True)
        self.head = nn.Linear(int(hidden_size), 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(features)
        return self.head(output[:, -1, :]).squeeze(-1)

    def example_input(self, batch: int = 2) -> torch.Tensor:
        return torch.zeros(batch, self.sequence_length, self.n_features)
