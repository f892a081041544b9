"""The strategy contract: trailing-only features, a classic target-weight rule, and forecast -> weights.

Convention (DESIGN): ``w[t]`` uses data up to and including bar t's close, is traded at that close and held
to close t+1. Before a strategy has enough history its weight is 0. Weights here are unit-sized
(-1, 0, 1); the engine scales and clips them to ``backtest.max_leverage``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class Strategy:
    """Base class. Subclasses set ``warmup`` (bars before the first defined weight) and implement
    ``target_weights``; ``features`` defaults to trailing returns over a few horizons."""

    name = "strategy"

    def __init__(self, long_only: bool = True, forecast_threshold: float = 0.0) -> None:
        if not isinstance(long_only, (bool, np.bool_)):
            raise TypeError(f"strategy.long_only must be true or false, got {long_only!r}.")
        if not np.isfinite(forecast_threshold) or forecast_threshold < 0:
            raise ValueError(f"strategy.forecast_threshold must be >= 0, got {forecast_threshold!r}.")
        self.long_only = bool(long_only)
        self.forecast_threshold = float(forecast_threshold)

    @property
    def warmup(self) -> int:
        """Bars of history needed before the first defined weight (index of the first usable bar)."""
        return 0

    def target_weights(self, close: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Trailing-only model inputs: each row uses bars up to and including its own."""
        close = bars["close"]
        log_close = np.log(close)
        horizons = sorted({1, 5, 20, max(2, self.warmup)})
        columns = {f"ret_{h}": log_close.diff(h) for h in horizons}
        columns["vol_20"] = log_close.diff().rolling(20).std()
        return pd.DataFrame(columns, index=bars.index)

    def weights_from_forecast(self, forecast: np.ndarray) -> np.ndarray:
        """Sign of the forecast beyond ``forecast_threshold``; NaN forecasts (no history) are flat."""
        forecast = np.asarray(forecast, dtype=float)
        weights = np.where(forecast > self.forecast_threshold, 1.0,
                           np.where(forecast < -self.forecast_threshold, -1.0, 0.0))
        weights[~np.isfinite(forecast)] = 0.0
        return self._side(weights)

    def _side(self, weights: np.ndarray) -> np.ndarray:
        """Apply ``long_only`` (shorts become flat) and the warm-up rule (weight 0 before ``warmup``)."""
        if self.long_only:
            weights = np.maximum(weights, 0.0)
        weights[: self.warmup] = 0.0
        return weights

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def require_int(key: str, value: object, minimum: int) -> int:
    """An integer parameter >= minimum, or a message naming the key and the allowed values."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"strategy.{key} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"strategy.{key} must be >= {minimum}, got {value}.")
    return int(value)


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Plain rolling mean over the last ``window`` values, NaN before index window-1 (cumsum, O(n))."""
    out = np.full(values.shape, np.nan)
    if window > len(values):
        return out
    csum = np.cumsum(np.concatenate([[0.0], values]))
    out[window - 1:] = (csum[window:] - csum[:-window]) / window
    return out
