"""Time-series momentum: ``w[t] = sign(close[t] / close[t-lookback] - 1)``."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd

from runner.config.schema import Doc
from strategies.base import Strategy, require_int


class Momentum(Strategy):
    def __init__(self, lookback: Annotated[int, Doc("bars between the two closes compared", "bars", ">= 1")] = 20,
                 ) -> None:
        self.lookback = require_int("lookback", lookback, 1)

    @property
    def warmup(self) -> int:
        return self.lookback

    def signal(self, bars: pd.DataFrame) -> np.ndarray:
        close = bars["close"].to_numpy(dtype=float)
        return np.sign(close / pd.Series(close).shift(self.lookback).to_numpy() - 1.0)
