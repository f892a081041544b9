"""Universes: many assets' bars aligned on the union of their timestamps, and where each asset has a price.

Reading a universe's files (a folder of per-symbol CSV/Parquet files, the symbol being the file's stem, or one long
file with ``date, symbol, open, high, low, close, volume``); the sources are ``runner.data.sources``. Pure: no
MLflow, no Hydra.

Alignment: after each of an asset's bars, its close is carried to at most ``data.max_fill`` following bars of
the union timeline where it has none (a return of 0: a holiday on its exchange). Beyond those, and before its
first bar, it has no price: it is not tradable there and the engine holds no weight in it, so a position in an
asset that stops trading (a delisting, a suspension) is sold at its last price ``max_fill`` bars after its last
bar. Whether a gap is short or an asset is gone is not known when it starts: filling forward only, never
checking whether the asset trades again, keeps the alignment free of look-ahead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from runner.data.series import normalise_ohlcv, read_table
from runner.errors import DataError

MIN_ASSETS = 2
FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
SYMBOL_COLUMNS = ("symbol", "ticker", "asset")
BUNDLED = {  # symbol: what it is (README: what the bundled universe is and is not)
    "SP500": "S&P 500 index, daily OHLCV 1999-2018 (arch.data.sp500)",
    "NASDAQ": "NASDAQ Composite index, daily OHLCV 1999-2018 (arch.data.nasdaq)",
    "WTI": "WTI crude oil spot price, daily close 1986-2019, FRED DCOILWTICO (arch.data.wti)",
    "GOOG": "Alphabet (Google) shares, daily OHLCV 2004-08-19 to 2008-10-14 (matplotlib sample data goog.npz)",
}


@dataclass
class Universe:
    """The book's data, bars x assets: assets' closes on one timeline (NaN where an asset has no price) and each
    asset's own bars. A single series is the one-column case (``from_series``), made at the data boundary."""

    name: str
    index: pd.DatetimeIndex
    symbols: list[str]
    close: np.ndarray  # (bars, assets): the close, carried max_fill bars; NaN where the asset has no price
    frames: dict[str, pd.DataFrame]  # each asset's own validated OHLCV bars (no filled rows)
    series: bool = False  # one series' bars (reported as that series: its own close, round trips, no per-asset tables)
    _digests: dict[tuple[int, int | None], str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_series(cls, bars: pd.DataFrame, name: str) -> Universe:
        """One validated OHLCV frame as a book of one asset."""
        close = np.ascontiguousarray(bars["close"].to_numpy(dtype=np.float64).reshape(-1, 1))
        return cls(name, pd.DatetimeIndex(bars.index, name="timestamp"), [name], close, {name: bars}, series=True)

    @property
    def bars(self) -> pd.DataFrame:
        """A series' OHLCV bars (the one asset's own)."""
        return self.frames[self.symbols[0]]

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    def tradable(self) -> np.ndarray:
        """(bars, assets) True where the asset has a price (its own bar, or a filled one within max_fill)."""
        return np.isfinite(self.close)

    def asset_bars(self, symbol: str) -> pd.DataFrame:
        return self.frames[symbol]

    def digest(self, start: int = 0, stop: int | None = None) -> str:
        """A digest of the bars a run trades: the timeline, the symbols and every asset's own bars (columns,
        timestamps, values); ``start``/``stop``: of the bars ``[start, stop)`` of the timeline only. The same data,
        however it was loaded, gives the same digest; a changed bar changes it."""
        if (start, stop) in self._digests:  # the bars never change once loaded: a batch's configurations share them
            return self._digests[start, stop]
        import hashlib

        timeline = self.index[start:stop]
        digest = hashlib.sha256()
        digest.update(timeline.asi8.tobytes())
        whole = len(timeline) == len(self.index)
        for symbol in self.symbols:
            frame = self.frames[symbol]
            if not whole:
                frame = frame.loc[(frame.index >= timeline[0]) & (frame.index <= timeline[-1])] if len(
                    timeline) else frame.iloc[:0]
            digest.update(f"|{symbol}|{','.join(map(str, frame.columns))}|".encode())
            digest.update(pd.DatetimeIndex(frame.index).asi8.tobytes())
            digest.update(np.ascontiguousarray(frame.to_numpy(dtype=np.float64, na_value=np.nan)).tobytes())
        self._digests[start, stop] = digest.hexdigest()[:16]
        return self._digests[start, stop]

    def on_timeline(self, values: np.ndarray, symbol: str, fill: bool = True) -> np.ndarray:
        """One value per bar of ``symbol``'s own bars placed on the universe's timeline: carried across its
        filled bars (no new information there) when ``fill``, NaN where the asset has no price."""
        own = self.frames[symbol].index
        column = self.close[:, self.symbols.index(symbol)]
        if own.equals(self.index):  # no filled bars to carry across (a series, or assets sharing one calendar)
            return np.where(np.isfinite(column), np.asarray(values, dtype=float), np.nan)
        out = pd.Series(values, index=own).reindex(self.index)
        if fill:
            out = out.ffill()
        return np.where(np.isfinite(column), out.to_numpy(dtype=float), np.nan)

    def features(self, features_of: Callable[[pd.DataFrame], pd.DataFrame]) -> list[pd.DataFrame]:
        """Each asset's model inputs, computed from its own bars, on the timeline (carried over filled bars)."""
        out = []
        for symbol in self.symbols:
            own = features_of(self.frames[symbol])
            out.append(pd.DataFrame({c: self.on_timeline(own[c].to_numpy(), symbol) for c in own.columns},
                                    index=self.index))
        return out


def align(frames: Mapping[str, pd.DataFrame], max_fill: int, name: str) -> Universe:
    """The union timeline, the close panel carried at most ``max_fill`` bars past each bar, and the first-bar
    check."""
    if isinstance(max_fill, bool) or not isinstance(max_fill, int) or max_fill < 0:
        raise DataError(f"data.max_fill={max_fill!r} must be an integer >= 0 (bars an asset's last price is carried).")
    frames = {s: f for s, f in frames.items() if len(f)}
    if len(frames) < MIN_ASSETS:
        raise DataError(f"{name}: a universe needs at least {MIN_ASSETS} assets with bars in the chosen dates; "
                        f"found {len(frames)} ({', '.join(frames) or 'none'}).")
    symbols = sorted(frames)
    index = functools.reduce(lambda a, b: a.union(b), (frames[s].index for s in symbols))
    panel = pd.DataFrame({s: frames[s]["close"] for s in symbols}).reindex(index)
    if max_fill:
        panel = panel.ffill(limit=max_fill)
    close = np.ascontiguousarray(panel.to_numpy(dtype=np.float64))
    present = np.isfinite(close[0])
    if present.sum() < MIN_ASSETS:
        counts = np.isfinite(close).sum(axis=1)
        ready = np.flatnonzero(counts >= MIN_ASSETS)
        hint = (f"set data.start={_stamp(index[ready[0]], index[0])} (the first bar {MIN_ASSETS} of them have "
                f"prices)" if len(ready) else "add assets whose histories overlap")
        raise DataError(f"{name}: only {int(present.sum())} asset(s) ({', '.join(np.array(symbols)[present])}) "
                        f"have a price at the first bar, {_stamp(index[0])}; a universe needs at least {MIN_ASSETS} "
                        f"from its first bar: {hint}.")
    return Universe(name, pd.DatetimeIndex(index, name="timestamp"), symbols, close, dict(frames))


def _stamp(when: pd.Timestamp, beside: pd.Timestamp | None = None) -> str:
    """A date, or the whole timestamp where the time of day matters (intraday bars, or a bar on the same date as
    ``beside``: a suggestion never repeats the setting that just failed)."""
    same_day = beside is not None and when.normalize() == beside.normalize()
    return str(when) if same_day or when != when.normalize() else str(when.date())


INTRADAY = pd.Timedelta(hours=20)  # a typical spacing below this: intraday bars; at or above it: daily or longer


def spacing(index: pd.DatetimeIndex) -> pd.Timedelta:
    """An asset's typical bar spacing: the median gap between its timestamps."""
    return pd.Series(index).diff().median() if len(index) > 1 else pd.Timedelta(0)


def check_spacings(frames: Mapping[str, pd.DataFrame], name: str) -> None:
    """Assets of one universe share a calendar kind: intraday bars beside daily ones (stamped at midnight, ahead
    of that day's intraday bars) would put a day's close before the hours it summarises, a look-ahead for any
    rule that compares assets, and price the daily asset on a fraction of the bars."""
    kinds = {symbol: spacing(frame.index) for symbol, frame in frames.items()}
    intraday = {s for s, gap in kinds.items() if gap < INTRADAY}
    if intraday and len(intraday) < len(kinds):
        listed = ", ".join(f"{s} every {gap}" for s, gap in sorted(kinds.items()))
        raise DataError(f"{name} mixes intraday and daily bars ({listed}); give files of one spacing, or set "
                        "data.resample=1D to aggregate every asset to daily bars at each day's close (README, "
                        "'Universes').")


def resample(frame: pd.DataFrame, rule: str) -> pd.DataFrame:
    """OHLCV bars aggregated to ``rule`` (a pandas offset, e.g. 1D): first open, highest high, lowest low, last
    close, summed volume, each bar labelled by its period's start (a day's bar by its date, as daily files are)
    and holding only that period's bars; periods without bars are dropped."""
    out = frame.resample(rule).agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                    "volume": lambda v: v.sum(min_count=1)})
    return out[out["close"].notna()]


def read_folder(folder: Path, date_column: str | None) -> dict[str, pd.DataFrame]:
    """One asset per CSV/Parquet file; the symbol is the file name without its suffix."""
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(FILE_SUFFIXES))
    if not files:
        raise DataError(f"data.path={str(folder)!r} is a folder without CSV or Parquet files (one per symbol, e.g. "
                        "AAPL.csv).")
    by_symbol: dict[str, list[Path]] = {}
    for file in files:
        symbol = next(file.name[: -len(s)] for s in FILE_SUFFIXES if file.name.lower().endswith(s))
        by_symbol.setdefault(symbol, []).append(file)
    twice = {symbol: named for symbol, named in by_symbol.items() if len(named) > 1}
    if twice:
        pairs = "; ".join(f"{symbol}: {', '.join(f.name for f in named)}" for symbol, named in twice.items())
        raise DataError(f"data.path={str(folder)!r} has more than one file for a symbol ({pairs}); keep one file per "
                        "symbol (the symbol is the file name without its suffix).")
    return {symbol: normalise_ohlcv(read_table(file, date_column, label="data.path"), f"data.path={str(file)!r}")
            for symbol, (file,) in by_symbol.items()}


def read_long(file: Path, date_column: str | None) -> dict[str, pd.DataFrame]:
    """One long file: a symbol column (symbol, ticker or asset; any case) beside the date and OHLCV columns."""
    return split_long(read_table(file, date_column), f"data.path={str(file)!r}")


def split_long(frame: pd.DataFrame, where: str) -> dict[str, pd.DataFrame]:
    """A long frame indexed by date, with a symbol column (symbol, ticker or asset; any case), as
    ``{symbol: OHLCV frame}``; ``where`` names it in messages."""
    lower = {str(c).strip().lower(): c for c in frame.columns}
    found = [lower[c] for c in SYMBOL_COLUMNS if c in lower]
    if not found:
        raise DataError(f"{where} is one file but has no symbol column (allowed names: "
                        f"{', '.join(SYMBOL_COLUMNS)}; columns are {list(map(str, frame.columns))}). A universe "
                        "is a long file (date, symbol, OHLCV) or a folder of one file per symbol.")
    symbols = frame[found[0]].astype(str)
    return {str(symbol): normalise_ohlcv(part.drop(columns=[found[0]]), f"{where} symbol {symbol!r}")
            for symbol, part in frame.groupby(symbols, sort=True)}


