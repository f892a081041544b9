"""Time-series momentum: ``w[t] = sign(close[t] / close[t-lookback] - 1)``."""

from __future__ import annotations

import numpy as np

from strategies.base import Strategy, require_int


class Momentum(Strategy):
    name = "momentum"

    def __init__(self, lookback: int = 20, long_only: bool = True, forecast_threshold: float = 0.0) -> None:
        super().__init__(long_only, forecast_threshold)
        self.lookback = require_int("lookback", lookback, 1)

    @property
    def warmup(self) -> int:
        return self.lookback

    def target_weights(self, close: np.ndarray) -> np.ndarray:
        close = np.asarray(close, dtype=float)
        weights = np.zeros(len(close))
        if len(close) > self.lookback:
            weights[self.lookback:] = np.sign(close[self.lookback:] / close[: -self.lookback] - 1.0)
        return self._side(weights)
