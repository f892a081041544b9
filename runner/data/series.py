"""One series' bars: reading CSV/Parquet files and the bundled series, validating an OHLCV frame (DatetimeIndex,
float open/high/low/close/volume), trimming, the train/val/test split and the bars a year.

Every problem is a ``DataError`` naming the file or key, what is wrong and how to fix it. Pure: no MLflow, no Hydra.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.errors import DataError

OHLCV = ("open", "high", "low", "close", "volume")
ARCH_DATASETS = {"sp500": "sp500/sp500.csv.gz", "nasdaq": "nasdaq/nasdaq.csv.gz"}
DATE_COLUMNS = ("date", "datetime", "timestamp", "time")
SEGMENTS = ("train", "val", "test")
PYARROW_CSV_BYTES = 4_000_000  # from this size on, CSVs are read with pyarrow (bench/scale.py)
CSV_BLOCK_BYTES = 1 << 22


def arch_data_path(name: str) -> Path:
    """Path of a CSV bundled in ``arch.data`` found without importing ``arch`` (~3 s of imports)."""
    spec = importlib.util.find_spec("arch")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"data.source={name!r} needs the 'arch' package: pip install arch")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / ARCH_DATASETS[name]


def read_csv(file: Path) -> pd.DataFrame:
    """A CSV through pyarrow's reader when it is large (faster, and it parses ISO timestamps itself: about
    twice as fast at a million rows, ``bench/scale.py``), else, or where pyarrow refuses the file, through
    pandas' C reader (whose errors the caller turns into messages)."""
    if file.stat().st_size >= PYARROW_CSV_BYTES and importlib.util.find_spec("pyarrow") is not None:
        try:
            return _read_csv_arrow(file)
        except Exception:  # noqa: BLE001 - pyarrow's errors vary (ArrowInvalid, ...); the C reader decides
            pass
    return pd.read_csv(file)


def _read_csv_arrow(file: Path) -> pd.DataFrame:
    """Block by block into one numpy array per column, on the system allocator (freed blocks go back to the
    OS): the peak stays near twice the frame's size instead of the text plus a whole Arrow table."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(file, memory_pool=pa.system_memory_pool(),
                           read_options=pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in reader.schema.names}
    for batch in reader:
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            parts[name].append(column.to_numpy(zero_copy_only=False))
    return pd.DataFrame({name: np.concatenate(chunks) for name, chunks in parts.items()}, copy=False)


def read_table(path: str | Path, date_column: str | None = None, label: str = "data.path") -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame indexed by its date column (or its index)."""
    file = Path(path).expanduser()
    if not str(path):
        raise DataError(f"{label} is empty: set it to a CSV or Parquet file, e.g. data.path=prices.csv")
    if not file.is_file():
        raise DataError(f"{label}={str(path)!r}: no such file. Give an existing CSV or Parquet file.")
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(file)
        else:
            frame = read_csv(file)
    except pd.errors.EmptyDataError:
        raise DataError(f"{label}={str(path)!r} is empty: it needs a header and at least one row.") from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as error:
        raise DataError(f"{label}={str(path)!r} could not be parsed as CSV/Parquet ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:200]}). Check the file's format.") from None
    if frame.empty:
        raise DataError(f"{label}={str(path)!r} has no rows.")
    return index_by_date(frame, date_column, f"{label}={str(path)!r}")


def index_by_date(frame: pd.DataFrame, date_column: str | None, where: str) -> pd.DataFrame:
    """The frame indexed by its date column (``date_column``, else one named as in ``DATE_COLUMNS``, else the first
    column), or as it is when its index holds dates already; a DataError names the frame (``where``)."""
    lower = {str(c).strip().lower(): c for c in frame.columns}
    if date_column is not None:
        if date_column.lower() not in lower:
            raise DataError(f"data.date_column={date_column!r} is not a column of {where}; "
                            f"columns are {list(map(str, frame.columns))}.")
        column = lower[date_column.lower()]
    elif isinstance(frame.index, pd.DatetimeIndex):
        return frame
    else:
        found = [lower[name] for name in DATE_COLUMNS if name in lower]
        column = found[0] if found else frame.columns[0]
        if not found and pd.api.types.is_numeric_dtype(frame[column]):  # numbers (prices) are not dates
            raise DataError(f"{where}: no date column found (none named {', '.join(DATE_COLUMNS)}, and the first "
                            f"column, {str(column)!r}, holds numbers); columns are {list(map(str, frame.columns))}. "
                            "Name the column of timestamps with data.date_column=NAME.")
    try:
        dates = pd.to_datetime(frame[column], format="mixed")
    except (ValueError, TypeError):
        raise DataError(f"{where}: column {str(column)!r} does not hold dates. Name the date column with "
                        "data.date_column=... (allowed: any column of parseable dates).") from None
    return frame.drop(columns=[column]).set_index(pd.DatetimeIndex(dates, name="timestamp"))


def normalise_ohlcv(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Lower-case OHLCV float columns, sorted unique dates, positive finite prices; or a DataError."""
    columns = {str(c).strip().lower().replace(" ", "_"): c for c in frame.columns}
    if "close" not in columns:
        raise DataError(f"{where} has no 'close' column (case-insensitive); columns are "
                        f"{list(map(str, frame.columns))}. Rename the price column to 'close'.")
    arrays: dict[str, np.ndarray] = {}  # float columns, shared with ``frame`` where they already are (no copy)
    for name in OHLCV:
        source = columns.get(name)
        if source is None:
            arrays[name] = np.full(len(frame), np.nan)
            continue
        column = frame[source]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            arrays[name] = column.to_numpy(dtype=float)  # a view where it is float already
            continue
        values = pd.to_numeric(column, errors="coerce")
        bad = values.isna() & column.notna()
        if bad.any():
            raise DataError(f"{where}: column {name!r} has non-numeric values at rows "
                            f"{_rows(frame.index[bad.to_numpy()])}. Fix or remove those rows.")
        arrays[name] = values.to_numpy(dtype=float)
    for name in ("open", "high", "low"):  # a close-only file still gives a valid OHLC frame
        missing = np.isnan(arrays[name])
        if missing.any():
            arrays[name] = np.where(missing, arrays["close"], arrays[name])
    out = pd.DataFrame(arrays, index=pd.DatetimeIndex(frame.index, name="timestamp"), copy=False)
    if out.index.hasnans:
        raise DataError(f"{where}: some timestamps are missing or unparseable. Fix the date column.")
    if out.index.has_duplicates:
        dups = out.index[out.index.duplicated()]
        raise DataError(f"{where}: duplicate timestamps {_rows(dups)}. Keep one row per timestamp.")
    if not out.index.is_monotonic_increasing:
        warnings.warn(f"{where}: rows were not in time order; sorted them by timestamp.", stacklevel=2)
        out = out.sort_index()
    bad_rows = np.zeros(len(out), dtype=bool)
    for name in ("open", "high", "low", "close"):  # column by column: no bars x 4 temporary
        prices = out[name].to_numpy()
        bad_rows |= ~(np.isfinite(prices) & (prices > 0))
    if bad_rows.any():
        raise DataError(f"{where}: non-positive or non-finite prices at {_rows(out.index[bad_rows])}. "
                        "Prices must be finite and > 0: fix or drop those rows.")
    return out


def _rows(index: Sequence[Any], limit: int = 5) -> str:
    shown = [str(pd.Timestamp(i).date()) if isinstance(i, (pd.Timestamp, np.datetime64)) else str(i)
             for i in list(index)[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return ", ".join(shown) + more


@functools.lru_cache(maxsize=len(ARCH_DATASETS))
def bundled_bars(name: str) -> pd.DataFrame:
    """A bundled series, read once per process (package data does not change; sweep jobs share it)."""
    where = f"data={name}"
    return normalise_ohlcv(index_by_date(pd.read_csv(arch_data_path(name)), "Date", where), where)


def trim(frame: pd.DataFrame, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Keep bars with start <= timestamp <= end (both optional, inclusive)."""
    try:
        lo = pd.Timestamp(start) if start else None
        hi = pd.Timestamp(end) if end else None
    except (ValueError, TypeError):
        raise DataError(f"data.start={start!r} / data.end={end!r}: use dates like 2005-01-31.") from None
    if lo is not None and hi is not None and lo > hi:
        raise DataError(f"data.start={start!r} is after data.end={end!r}.")
    out = frame.loc[lo:hi]
    if out.empty:
        raise DataError(f"no bars between data.start={start!r} and data.end={end!r}; the data covers "
                        f"{frame.index[0].date()} to {frame.index[-1].date()}.")
    return out


def split_bounds(n_bars: int, splits: Sequence[float], min_bars: int = 2) -> tuple[int, int]:
    """Segment ends ``(train_end, val_end)``: train = first floor(f_train*n) bars, val the next
    floor(f_val*n), test the rest."""
    if len(splits) != 3:
        raise DataError(f"data.splits={list(splits)} must be three fractions [train, val, test].")
    fractions = [float(f) for f in splits]
    if any(not math.isfinite(f) or f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0,
                                                                              abs_tol=1e-9):
        raise DataError(f"data.splits={fractions} must be non-negative and sum to 1, e.g. [0.6, 0.2, 0.2].")
    train_end = math.floor(fractions[0] * n_bars)
    val_end = train_end + math.floor(fractions[1] * n_bars)
    sizes = {"train": train_end, "val": val_end - train_end, "test": n_bars - val_end}
    short = {k: v for k, v in sizes.items() if v < min_bars and fractions[SEGMENTS.index(k)] > 0}
    if short:
        raise DataError(f"too few bars: {n_bars} bars split {fractions} leave {short}; each segment needs at "
                        f"least {min_bars}. Use more data (data.start/data.end) or other data.splits.")
    return train_end, val_end


def infer_periods_per_year(index: pd.Index) -> int:
    """Bars a year from the timestamps: (n - 1) bars over the span in years (365.25 days), rounded; about 252
    for daily equities, 52 for weekly bars, about 6,200 for hourly FX bars that trade 24/5."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 3 or index[-1] <= index[0]:
        raise DataError("backtest.periods_per_year=auto needs dated bars to infer it from; set it, e.g. "
                        "backtest.periods_per_year=252 for daily bars.")
    years = (index[-1] - index[0]).total_seconds() / (365.25 * 86400)
    return max(1, round((len(index) - 1) / years))
