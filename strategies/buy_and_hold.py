"""Buy and hold: ``w = 1`` from the first bar."""

from __future__ import annotations

import numpy as np
import pandas as pd

from strategies.base import Strategy


class BuyAndHold(Strategy):
    uses_model = False  # w = 1 whatever a forecast says: its YAML selects model=none

    def signal(self, bars: pd.DataFrame) -> np.ndarray:
        return np.ones(len(bars))
