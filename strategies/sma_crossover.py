"""SMA crossover: ``w[t] = 1`` while ``SMA_fast[t] > SMA_slow[t]``, else flat (or short).

SMA_n is the plain mean of the last n closes, defined from bar n-1 on, so the first weight is at bar slow-1.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd

from runner.config.schema import Doc
from runner.errors import ConfigError
from strategies.base import Strategy, require_int, rolling_mean


class SmaCrossover(Strategy):
    def __init__(self, fast: Annotated[int, Doc("bars in the fast moving average", "bars", ">= 1, < slow")] = 10,
                 slow: Annotated[int, Doc("bars in the slow moving average", "bars", ">= 2, > fast")] = 50) -> None:
        self.fast = require_int("fast", fast, 1)
        self.slow = require_int("slow", slow, 2)
        if self.fast >= self.slow:
            raise ConfigError(f"strategy.fast must be < strategy.slow, got fast={fast}, slow={slow}.")

    @property
    def warmup(self) -> int:
        return self.slow - 1

    def signal(self, bars: pd.DataFrame) -> np.ndarray:
        close = bars["close"].to_numpy(dtype=float)
        return np.where(rolling_mean(close, self.fast) > rolling_mean(close, self.slow), 1.0, -1.0)
