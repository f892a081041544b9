"""SMA crossover: ``w[t] = 1`` while ``SMA_fast[t] > SMA_slow[t]``, else flat (or short).

SMA_n is the plain mean of the last n closes, defined from bar n-1 on, so the first weight is at bar slow-1.
"""

from __future__ import annotations

import numpy as np

from strategies.base import Strategy, require_int, rolling_mean


class SmaCrossover(Strategy):
    name = "sma_crossover"

    def __init__(self, fast: int = 10, slow: int = 50, long_only: bool = True,
                 forecast_threshold: float = 0.0) -> None:
        super().__init__(long_only, forecast_threshold)
        self.fast = require_int("fast", fast, 1)
        self.slow = require_int("slow", slow, 2)
        if self.fast >= self.slow:
            raise ValueError(f"strategy.fast must be < strategy.slow, got fast={fast}, slow={slow}.")

    @property
    def warmup(self) -> int:
        return self.slow - 1

    def target_weights(self, close: np.ndarray) -> np.ndarray:
        close = np.asarray(close, dtype=float)
        fast, slow = rolling_mean(close, self.fast), rolling_mean(close, self.slow)
        weights = np.where(fast > slow, 1.0, -1.0)  # NaN comparisons are False: fixed by _side's warm-up
        return self._side(weights)
