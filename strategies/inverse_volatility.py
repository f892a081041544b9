"""Inverse volatility (risk parity without correlations): every priced asset held long with a weight
proportional to ``1 / sigma_i``, sigma the std of its log returns over the last ``window`` bars; the weights
sum to 1. Its rule has no use for a forecast: it runs with model=none."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np

from runner.config.schema import Doc
from strategies.base import CrossSectionalStrategy, require_int, row_shares, trailing_volatility

if TYPE_CHECKING:
    from runner.data.universe import Universe


class InverseVolatility(CrossSectionalStrategy):
    uses_model = False

    def __init__(self, window: Annotated[int, Doc("bars of the volatility estimate", "bars", ">= 2")] = 60) -> None:
        self.window = require_int("window", window, 2)

    @property
    def warmup(self) -> int:
        return self.window

    def scores(self, universe: Universe) -> np.ndarray:
        return 1.0 / trailing_volatility(universe.close, self.window)

    def weights_from_scores(self, scores: np.ndarray, universe: Universe) -> np.ndarray:
        return row_shares(np.where(np.isfinite(universe.close), scores, 0.0))
