"""The strategy contract: a raw signal from the bars, a declared warm-up, and the rules every strategy obeys;
on a universe, per-asset rules combined equally, or a cross-sectional rule (``CrossSectionalStrategy``).

Convention (DESIGN): ``w[t]`` uses data up to and including bar t's close, is traded at that close and held
to close t+1. A subclass implements ``signal(bars)`` (unit-sized, in [-1, 1], from trailing data only) and
declares ``warmup``; this base class applies the shared rules (``runner.config.schema.StrategyRules``: long-only,
the forecast threshold) and the warm-up itself, so a new strategy cannot forget them. The engine scales
weights to ``backtest.max_leverage``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from runner.config.schema import StrategyRules
from runner.errors import ConfigError, ConfigTypeError

if TYPE_CHECKING:
    from runner.data.universe import Universe


class Strategy:
    """Subclasses implement ``signal`` and may override ``warmup`` and ``features``."""

    rules: StrategyRules = StrategyRules()
    uses_model: bool = True  # False: the rule has no use for a forecast, and a model is refused
    cross_sectional: bool = False  # True: the rule ranks assets against each other and needs a universe

    @property
    def warmup(self) -> int:
        """Bars of history needed before the first defined weight (index of the first usable bar)."""
        return 0

    def signal(self, bars: pd.DataFrame) -> np.ndarray:
        """The raw target weight per bar from OHLCV ``bars`` (trailing data only); NaN counts as flat."""
        raise NotImplementedError(f"{type(self).__name__} must implement signal(bars)")

    def features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Trailing-only model inputs: each row uses bars up to and including its own. Scaled by the strategy's
        own window (its warm-up ``w``): log returns over 1, w/4, w/2 and w bars and the volatility over w
        bars, so that sweeping the window changes what a model sees."""
        log_close = np.log(bars["close"])
        window = max(2, self.warmup)
        horizons = sorted({1, max(2, window // 4), max(2, window // 2), window})
        columns = {f"ret_{h}": log_close.diff(h) for h in horizons}
        columns[f"vol_{max(5, window)}"] = log_close.diff().rolling(max(5, window)).std()
        return pd.DataFrame(columns, index=bars.index)

    def with_rules(self, rules: StrategyRules) -> Strategy:
        self.rules = rules
        return self

    def target_weights(self, bars: pd.DataFrame) -> np.ndarray:
        """The strategy's classic rule: its signal with the shared rules and the warm-up applied."""
        raw = np.asarray(self.signal(bars), dtype=float)
        if raw.shape != (len(bars),):
            raise ValueError(f"{type(self).__name__}.signal returned shape {raw.shape}; expected ({len(bars)},).")
        return self._apply_rules(raw)

    def weights_from_forecast(self, forecast: np.ndarray) -> np.ndarray:
        """Sign of a model's forecast beyond ``forecast_threshold``; NaN forecasts (no history) are flat."""
        forecast = np.asarray(forecast, dtype=float)
        threshold = self.rules.forecast_threshold
        weights = np.where(forecast > threshold, 1.0, np.where(forecast < -threshold, -1.0, 0.0))
        return self._apply_rules(weights)

    def portfolio_weights(self, universe: Universe) -> np.ndarray:
        """On a universe: the rule on each asset's own bars, each asset given an equal share of the book
        (``1/N_t``, N_t the assets priced at bar t); a target is carried across its asset's filled bars."""
        columns = [universe.on_timeline(self.target_weights(universe.asset_bars(s)), s) for s in universe.symbols]
        return equal_shares(np.column_stack(columns))

    def portfolio_weights_from_forecast(self, forecasts: np.ndarray, universe: Universe) -> np.ndarray:
        """A pooled model's forecasts (bars x assets) through the per-asset rule, each asset an equal share."""
        columns = [self.weights_from_forecast(forecasts[:, i]) for i in range(forecasts.shape[1])]
        return equal_shares(np.where(np.isfinite(universe.close), np.column_stack(columns), np.nan))

    def _apply_rules(self, weights: np.ndarray) -> np.ndarray:
        weights = np.where(np.isfinite(weights), weights, 0.0)
        if self.rules.long_only:
            weights = np.maximum(weights, 0.0)
        weights[: self.warmup] = 0.0
        return weights

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class CrossSectionalStrategy(Strategy):
    """Ranks a universe's assets bar by bar: ``scores`` (trailing data only; NaN: not rankable) in, weights out
    through ``weights_from_scores``. With a model, the pooled forecasts are the scores."""

    cross_sectional = True

    def scores(self, universe: Universe) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement scores(universe)")

    def weights_from_scores(self, scores: np.ndarray, universe: Universe) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement weights_from_scores(scores, universe)")

    def signal(self, bars: pd.DataFrame) -> np.ndarray:
        raise ConfigError(f"{type(self).__name__} ranks assets against each other: it needs a universe (data="
                         "bundled_universe, synthetic_universe or universe), not a single series.")

    def portfolio_weights(self, universe: Universe) -> np.ndarray:
        return self._apply_rules(self.weights_from_scores(self.scores(universe), universe))

    def portfolio_weights_from_forecast(self, forecasts: np.ndarray, universe: Universe) -> np.ndarray:
        return self._apply_rules(self.weights_from_scores(forecasts, universe))


def equal_shares(weights: np.ndarray) -> np.ndarray:
    """Per-asset weights (NaN: no price) scaled by ``1/N_t``, N_t the assets with a price at bar t."""
    counts = np.isfinite(weights).sum(axis=1, keepdims=True)
    return np.divide(np.nan_to_num(weights), counts, out=np.zeros_like(weights), where=counts > 0)


def row_shares(sizes: np.ndarray) -> np.ndarray:
    """Each bar's non-negative sizes scaled to sum to 1 (a NaN or infinite size counts as 0, e.g. 1/volatility
    of a flat price; a bar with none stays all 0)."""
    sizes = np.where(np.isfinite(sizes), sizes, 0.0)
    total = sizes.sum(axis=1, keepdims=True)
    return np.divide(sizes, total, out=np.zeros_like(sizes), where=total > 0)


def top_k(scores: np.ndarray, k: int, largest: bool = True, exclude: np.ndarray | None = None) -> np.ndarray:
    """Per bar, True at the ``k`` largest (or smallest) finite scores not in ``exclude`` (ties: the first
    symbol); fewer where fewer are rankable."""
    valid = np.isfinite(scores) if exclude is None else np.isfinite(scores) & ~exclude
    keyed = np.where(valid, -scores if largest else scores, np.inf)
    order = np.argsort(keyed, axis=1, kind="stable")[:, :k]
    chosen = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(chosen, order, True, axis=1)
    return chosen & valid


def trailing_volatility(close: np.ndarray, window: int) -> np.ndarray:
    """Sample std (ddof=1) of each column's log returns over the last ``window`` bars; NaN until defined or
    where the window holds a bar without a price."""
    log_returns = pd.DataFrame(np.log(close)).diff()
    return log_returns.rolling(window).std().to_numpy()


def require_int(key: str, value: object, minimum: int) -> int:
    """An integer parameter >= minimum, or a message naming the key and the allowed values."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigTypeError(f"strategy.{key} must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ConfigError(f"strategy.{key} must be >= {minimum}, got {value}.")
    return int(value)


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Plain rolling mean over the last ``window`` values, NaN before index window-1."""
    return pd.Series(values, dtype=float).rolling(window).mean().to_numpy()
