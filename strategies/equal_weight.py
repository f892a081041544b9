"""Equal weight: ``1/N_t`` in each of the N_t assets priced at bar t, rebalanced as ``backtest.rebalance`` says
(the benchmark a universe strategy has to beat). Its rule has no use for a forecast: it runs with model=none."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from strategies.base import CrossSectionalStrategy, row_shares

if TYPE_CHECKING:
    from runner.data.universe import Universe


class EqualWeight(CrossSectionalStrategy):
    uses_model = False

    def scores(self, universe: Universe) -> np.ndarray:
        return np.where(np.isfinite(universe.close), 1.0, np.nan)

    def weights_from_scores(self, scores: np.ndarray, universe: Universe) -> np.ndarray:
        return row_shares(np.isfinite(scores).astype(float))
