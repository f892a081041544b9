"""Cross-sectional momentum: rank the assets by their trailing return, hold the top k (and, with
``long_only: false``, short the bottom k), equally or inverse-volatility sized.

Score ``close[t]/close[t-lookback] - 1`` (NaN where either close is missing: not ranked). The long side sums to
1; with shorts each side sums to 0.5 (dollar neutral, gross 1). With a model, the pooled forecasts are ranked
instead of the trailing returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import numpy as np

from runner.config.schema import Doc
from runner.errors import ConfigError
from strategies.base import CrossSectionalStrategy, require_int, row_shares, top_k, trailing_volatility

if TYPE_CHECKING:
    from runner.data.universe import Universe

SIZINGS = ("equal", "inverse_volatility")


class XsMomentum(CrossSectionalStrategy):
    def __init__(self, lookback: Annotated[int, Doc("bars of trailing return the assets are ranked by", "bars",
                                                    ">= 1")] = 60,
                 top_k: Annotated[int, Doc("assets held long (and short, when long_only is false)", "assets",
                                           ">= 1")] = 2,
                 sizing: Annotated[str, Doc("how the held assets share their side", "",
                                            "equal | inverse_volatility")] = "equal",
                 vol_window: Annotated[int, Doc("sizing=inverse_volatility: bars of the volatility estimate",
                                                "bars", ">= 2")] = 20) -> None:
        self.lookback = require_int("lookback", lookback, 1)
        self.top_k = require_int("top_k", top_k, 1)
        if sizing not in SIZINGS:
            raise ConfigError(f"strategy.sizing={sizing!r} is not valid; allowed: {', '.join(SIZINGS)}.")
        self.sizing = sizing
        self.vol_window = require_int("vol_window", vol_window, 2)

    @property
    def warmup(self) -> int:
        return max(self.lookback, self.vol_window if self.sizing == "inverse_volatility" else 0)

    def scores(self, universe: Universe) -> np.ndarray:
        close = universe.close
        past = np.full_like(close, np.nan)
        past[self.lookback:] = close[: -self.lookback]
        return close / past - 1.0

    def weights_from_scores(self, scores: np.ndarray, universe: Universe) -> np.ndarray:
        scores = np.where(np.isfinite(universe.close), scores, np.nan)
        longs = top_k(scores, self.top_k)
        sides = [(longs, 1.0)]
        if not self.rules.long_only:
            sides.append((top_k(scores, self.top_k, largest=False, exclude=longs), -1.0))
        size = (1.0 / trailing_volatility(universe.close, self.vol_window) if self.sizing == "inverse_volatility"
                else np.ones_like(scores))
        weights = np.zeros_like(scores)
        budget = 1.0 / len(sides)
        for chosen, sign in sides:
            weights += sign * budget * row_shares(np.where(chosen, size, 0.0))
        return weights
