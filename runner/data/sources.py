"""The built-in data sources: each a class whose constructor takes its YAML's keys (``conf/data/*.yaml``, built
from ``_target_``; the YAML is the one home of their values) and whose ``load()`` returns the bars: one OHLCV
frame with a DatetimeIndex for a series, or ``{symbol: OHLCV frame}`` for a universe. A user's own source is the
same: one module plus one YAML.

What every source shares (``data.start``/``data.end``, ``data.splits``, a universe's ``data.max_fill``) is applied
by ``runner.data.loader``, never by a source. Pure: no MLflow, no Hydra.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd

from runner.config.schema import Doc
from runner.data.series import ARCH_DATASETS, bundled_bars, normalise_ohlcv, read_table
from runner.data.universe import BUNDLED, MIN_ASSETS, read_folder, read_long
from runner.errors import DataError

SYNTHETIC_START = "2000-01-03"
SEED_DOC = Doc("random seed of the generator", "", "int (default: the top-level seed, ${seed})")


class BundledSeries:
    """S&P 500 or NASDAQ Composite daily OHLCV 1999-2018, bundled in the ``arch`` package (no network)."""

    def __init__(self, series: Annotated[str, Doc("which bundled series", "", " | ".join(ARCH_DATASETS))]) -> None:
        if series not in ARCH_DATASETS:
            raise DataError(f"data.series={series!r} is not bundled; allowed: {', '.join(ARCH_DATASETS)}.")
        self.series = series

    def load(self) -> pd.DataFrame:
        return bundled_bars(self.series).copy()


class CsvFile:
    """Your own bars: a CSV or Parquet file, OHLCV columns case-insensitive (close required), a date column."""

    def __init__(self, path: Annotated[str, Doc("the file to read", "path", "a .csv or .parquet file")],
                 date_column: Annotated[str | None, Doc("the column of timestamps", "",
                                                        "a column name; null: date/datetime/timestamp/time")] = None,
                 ) -> None:
        if not path:
            raise DataError("data=csv needs data.path: the CSV or Parquet file, e.g. data.path=prices.csv")
        self.path, self.date_column = str(path), date_column

    def load(self) -> pd.DataFrame:
        return normalise_ohlcv(read_table(self.path, self.date_column), f"data.path={self.path!r}")


class SyntheticSeries:
    """A seeded geometric random walk on business days; ``regimes`` > 1 alternates the drift's sign."""

    def __init__(self, seed: Annotated[int, SEED_DOC],
                 n_bars: Annotated[int, Doc("number of bars", "bars", ">= 2")],
                 drift: Annotated[float, Doc("mean log return per bar", "per bar", "finite")],
                 volatility: Annotated[float, Doc("std of the log return per bar", "per bar", ">= 0")],
                 regimes: Annotated[int, Doc("blocks of alternating drift sign", "", ">= 1")],
                 autocorrelation: Annotated[float, Doc(
                     "AR(1) coefficient of the log returns' noise, at the same volatility (> 0: trends that short "
                     "lookbacks can exploit, a planted edge)", "", "-1 < value < 1")] = 0.0) -> None:
        if n_bars < 2:
            raise DataError(f"data.n_bars must be >= 2, got {n_bars}.")
        if volatility < 0 or not math.isfinite(volatility):
            raise DataError(f"data.volatility must be finite and >= 0, got {volatility}.")
        if regimes < 1:
            raise DataError(f"data.regimes must be >= 1, got {regimes}.")
        if not -1 < autocorrelation < 1:
            raise DataError(f"data.autocorrelation must be between -1 and 1 (exclusive), got {autocorrelation}.")
        self.seed, self.n_bars, self.drift, self.volatility, self.regimes = seed, n_bars, drift, volatility, regimes
        self.autocorrelation = autocorrelation

    def load(self) -> pd.DataFrame:
        n, drift, volatility = self.n_bars, self.drift, self.volatility
        rng = np.random.default_rng(self.seed)
        signs = np.where(np.arange(n) * self.regimes // n % 2 == 0, 1.0, -1.0)
        noise = rng.standard_normal(n)
        if self.autocorrelation:  # e[t] = phi e[t-1] + sqrt(1 - phi^2) z[t]: unit variance, lag-1 correlation phi
            from scipy.signal import lfilter

            phi = self.autocorrelation
            noise = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], noise, zi=[phi * noise[0]])[0]
        log_returns = drift * signs - 0.5 * volatility**2 + volatility * noise
        log_returns[0] = 0.0
        close = 100.0 * np.exp(np.cumsum(log_returns))
        gap = volatility * np.abs(rng.standard_normal(n)) * close
        open_ = np.concatenate([[close[0]], close[:-1]])
        return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + gap,
                             "low": np.maximum(np.minimum(open_, close) - gap, 1e-6), "close": close,
                             "volume": rng.integers(1_000, 10_000, n).astype(float)},
                            index=pd.bdate_range(SYNTHETIC_START, periods=n, name="timestamp"))


class UniverseFiles:
    """Your own universe: a folder of per-symbol CSV/Parquet files (the symbol is the file name), or one long file
    with date, symbol, open, high, low, close, volume columns (case-insensitive; close required)."""

    def __init__(self, path: Annotated[str, Doc("a folder of per-symbol files, or one long file", "path",
                                                "a folder of .csv/.parquet files, or one such file")],
                 date_column: Annotated[str | None, Doc("the column of timestamps", "",
                                                        "a column name; null: date/datetime/timestamp/time")] = None,
                 ) -> None:
        if not path:
            raise DataError("data=universe needs data.path: a folder of per-symbol files or one long file.")
        self.path, self.date_column = Path(str(path)).expanduser(), date_column
        self.name = self.path.name

    def load(self) -> dict[str, pd.DataFrame]:
        if self.path.is_dir():
            return read_folder(self.path, self.date_column)
        if self.path.is_file():
            return read_long(self.path, self.date_column)
        raise DataError(f"data.path={str(self.path)!r}: no such file or folder.")


class SyntheticUniverse:
    """A seeded one-factor universe: log returns ``drift + mu_i + beta_i * m[t] + e[t, i]``, one market factor
    ``m ~ N(0, market_volatility)``, betas ``~ N(1, 0.3)``, noise ``e ~ N(0, idio_volatility)`` and per-asset drifts
    ``mu_i ~ N(0, drift_dispersion)`` (0: no cross-sectional edge to find; > 0: a persistent one)."""

    name = "synthetic_universe"

    def __init__(self, seed: Annotated[int, SEED_DOC],
                 n_assets: Annotated[int, Doc("number of assets", "assets", f">= {MIN_ASSETS}")],
                 n_bars: Annotated[int, Doc("number of bars", "bars", ">= 2")],
                 drift: Annotated[float, Doc("mean log return per bar of every asset", "per bar", "finite")],
                 drift_dispersion: Annotated[float, Doc("std of the per-asset drifts (0: no cross-sectional edge)",
                                                        "per bar", ">= 0")],
                 market_volatility: Annotated[float, Doc("std of the market factor", "per bar", ">= 0")],
                 idio_volatility: Annotated[float, Doc("std of each asset's noise", "per bar", ">= 0")],
                 ) -> None:
        if isinstance(n_assets, bool) or n_assets < MIN_ASSETS:
            raise DataError(f"data.n_assets must be an integer >= {MIN_ASSETS}, got {n_assets!r}.")
        if n_bars < 2:
            raise DataError(f"data.n_bars must be >= 2, got {n_bars}.")
        for key, value in (("drift_dispersion", drift_dispersion), ("market_volatility", market_volatility),
                           ("idio_volatility", idio_volatility)):
            if not np.isfinite(value) or value < 0:
                raise DataError(f"data.{key} must be finite and >= 0, got {value!r}.")
        self.seed, self.n_assets, self.n_bars, self.drift = seed, n_assets, n_bars, drift
        self.drift_dispersion, self.market_volatility, self.idio_volatility = (drift_dispersion, market_volatility,
                                                                               idio_volatility)

    def load(self) -> dict[str, pd.DataFrame]:
        n, k = self.n_bars, self.n_assets
        rng = np.random.default_rng(self.seed)
        beta = rng.normal(1.0, 0.3, k)
        mu = rng.normal(0.0, self.drift_dispersion, k) if self.drift_dispersion else np.zeros(k)
        market = rng.normal(0.0, self.market_volatility, (n, 1))
        log_returns = self.drift + mu + beta * market + rng.normal(0.0, self.idio_volatility, (n, k))
        log_returns[0] = 0.0
        close = 100.0 * np.exp(np.cumsum(log_returns, axis=0))
        index = pd.bdate_range(SYNTHETIC_START, periods=n, name="timestamp")
        width = len(str(k - 1))
        return {f"A{i:0{width}d}": pd.DataFrame({"open": close[:, i], "high": close[:, i], "low": close[:, i],
                                                  "close": close[:, i], "volume": np.nan}, index=index)
                for i in range(k)}


class BundledUniverse:
    """The daily price series the installed packages ship, as one universe (``runner.data.universe.BUNDLED``):
    two indices, a commodity and one stock that lists late and stops early; a demonstration, not an investable
    equity universe."""

    name = "bundled_universe"

    def load(self) -> dict[str, pd.DataFrame]:
        return dict(bundled_frames())


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data=bundled_universe needs the {package!r} package: pip install {package}")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


@functools.lru_cache(maxsize=1)
def bundled_frames() -> dict[str, pd.DataFrame]:
    """The four daily series of ``BUNDLED``, read once per process."""
    wti = pd.read_csv(_package_file("arch", "data", "wti", "wti.csv.gz"), na_values=".").dropna()
    wti = pd.DataFrame({"close": wti["DCOILWTICO"].to_numpy(float)},
                       index=pd.DatetimeIndex(pd.to_datetime(wti["Date"], format="%m/%d/%Y"), name="timestamp"))
    goog = np.load(_package_file("matplotlib", "mpl-data", "sample_data", "goog.npz"))["price_data"]
    goog = pd.DataFrame({k: goog[k].astype(float) for k in ("open", "high", "low", "close", "volume")},
                        index=pd.DatetimeIndex(goog["date"], name="timestamp"))
    frames = {"SP500": bundled_bars("sp500"), "NASDAQ": bundled_bars("nasdaq"),
              "WTI": normalise_ohlcv(wti, "data=bundled_universe WTI"),
              "GOOG": normalise_ohlcv(goog, "data=bundled_universe GOOG")}
    assert set(frames) == set(BUNDLED)
    return frames
