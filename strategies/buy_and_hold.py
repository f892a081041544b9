"""Buy and hold: ``w = 1`` from the first bar (a model forecast still decides when one is configured)."""

from __future__ import annotations

import numpy as np

from strategies.base import Strategy


class BuyAndHold(Strategy):
    name = "buy_and_hold"

    def target_weights(self, close: np.ndarray) -> np.ndarray:
        return self._side(np.ones(len(close)))
