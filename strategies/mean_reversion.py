"""Mean reversion on the z-score of close against its rolling mean and std (stateful).

``z[t] = (close[t] - mean_window[t]) / std_window[t]`` (sample std, ddof=1), defined from bar window-1.
Long side: enter below ``-entry_z``, exit above ``-exit_z``; the short side mirrors it (enter above
``entry_z``, exit below ``exit_z``). Exits are checked before entries, so a bar can close one side and
open the other; a long entry (z < -entry_z < exit_z) always closes a short first, so dropping the
shorts (``long_only``) leaves the long positions unchanged. An undefined z (flat window) keeps the
current position.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd

from runner.config.schema import Doc
from runner.errors import ConfigError, ConfigTypeError
from strategies.base import Strategy, require_int


class MeanReversion(Strategy):
    def __init__(self, window: Annotated[int, Doc("bars in the rolling mean and std of the z-score", "bars",
                                                  ">= 2")] = 20,
                 entry_z: Annotated[float, Doc("enter long below -entry_z (short above entry_z)", "std devs",
                                               "> 0")] = 2.0,
                 exit_z: Annotated[float, Doc("exit a long above -exit_z (a short below exit_z)", "std devs",
                                              "-entry_z < exit_z < entry_z")] = 0.5) -> None:
        self.window = require_int("window", window, 2)
        for key, value in (("entry_z", entry_z), ("exit_z", exit_z)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigTypeError(f"strategy.{key} must be a finite number, got {value!r}.")
        if entry_z <= 0:
            raise ConfigError(f"strategy.entry_z must be > 0, got {entry_z}.")
        if not -entry_z < exit_z < entry_z:
            raise ConfigError(f"strategy.exit_z must lie strictly between -entry_z and entry_z "
                             f"(-{entry_z} < exit_z < {entry_z}), got {exit_z}.")
        self.entry_z, self.exit_z = float(entry_z), float(exit_z)

    @property
    def warmup(self) -> int:
        return self.window - 1

    def zscore(self, close: np.ndarray) -> np.ndarray:
        rolling = pd.Series(close).rolling(self.window)
        mean, std = rolling.mean().to_numpy(), rolling.std(ddof=1).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (close - mean) / std
        z[~(std > 1e-12 * np.abs(mean))] = np.nan  # a flat window has no z-score
        return z

    def signal(self, bars: pd.DataFrame) -> np.ndarray:
        z = self.zscore(bars["close"].to_numpy(dtype=float))
        # The state machine is inherently sequential: a loop over plain floats (see bench/engine.py).
        enter_long, exit_long = (z < -self.entry_z).tolist(), (z > -self.exit_z).tolist()
        enter_short, exit_short = (z > self.entry_z).tolist(), (z < self.exit_z).tolist()
        weights = [0.0] * len(z)
        position = 0.0
        for t in range(self.warmup, len(z)):
            if position > 0 and exit_long[t] or position < 0 and exit_short[t]:
                position = 0.0
            if position == 0.0:
                position = 1.0 if enter_long[t] else -1.0 if enter_short[t] else 0.0
            weights[t] = position
        return np.asarray(weights)
