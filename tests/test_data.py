"""Market data loading and its validation messages."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from runner.data.loader import load_data
from runner.data.series import infer_periods_per_year, split_bounds
from runner.errors import ConfigTypeError, DataError, NotFoundError
from tests.conftest import data_config


def test_sp500_and_nasdaq_load_from_arch_without_importing_it() -> None:
    import sys

    for name in ("sp500", "nasdaq"):
        bars = load_data(data_config(name)).bars
        assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
        assert bars.index.is_monotonic_increasing and bars.index[0].year == 1999 and bars.index[-1].year == 2018
        assert len(bars) > 4900 and (bars["close"] > 0).all()
    assert "arch.univariate" not in sys.modules


def test_trim_and_splits() -> None:
    bars = load_data(data_config("sp500", start="2005-01-01", end="2005-12-31")).bars
    assert bars.index[0] >= pd.Timestamp("2005-01-01") and bars.index[-1] <= pd.Timestamp("2005-12-31")
    assert split_bounds(100, [0.6, 0.2, 0.2]) == (60, 80)
    assert split_bounds(101, [0.6, 0.2, 0.2]) == (60, 80)  # floor for train and val, test the rest
    with pytest.raises(DataError, match="sum to 1"):
        split_bounds(100, [0.6, 0.3, 0.2])
    with pytest.raises(DataError, match="too few bars"):
        split_bounds(5, [0.6, 0.2, 0.2])


def test_synthetic_is_seeded() -> None:
    a = load_data(data_config("synthetic", n_bars=300, seed=1)).bars
    b = load_data(data_config("synthetic", n_bars=300, seed=1)).bars
    c = load_data(data_config("synthetic", n_bars=300, seed=2)).bars
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["close"], c["close"])


def test_csv_with_mixed_case_columns_and_parquet(tmp_path) -> None:
    frame = pd.DataFrame({"Date": pd.bdate_range("2020-01-01", periods=30).strftime("%Y-%m-%d"),
                          "CLOSE": np.linspace(10, 20, 30), "Volume": 1.0})
    frame.to_csv(tmp_path / "p.csv", index=False)
    bars = load_data(data_config("csv", path=str(tmp_path / "p.csv"))).bars
    assert bars["close"].iloc[-1] == 20 and (bars["open"] == bars["close"]).all()
    frame.to_parquet(tmp_path / "p.parquet")
    assert len(load_data(data_config("csv", path=str(tmp_path / "p.parquet"))).bars) == 30


def _write(tmp_path, text: str | bytes, name: str = "bad.csv") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("", "is empty"),
    (b"\x00\x01\xff\xfe\x00garbage\x00" * 20, "could not be parsed|no 'close' column|does not hold dates"),
    ("date,open\n2020-01-01,1\n", "no 'close' column"),
    ("date,close\n2020-01-01,1\n2020-01-02,-3\n", "non-positive or non-finite prices at 2020-01-02"),
    ("date,close\n2020-01-01,1\n2020-01-02,nan\n", "non-positive or non-finite prices at 2020-01-02"),
    ("date,close\n2020-01-01,1\n2020-01-01,2\n", "duplicate timestamps 2020-01-01"),
    ("date,close\nyesterday,1\ntoday,2\n", "does not hold dates"),
    ("date,close\n2020-01-01,abc\n", "non-numeric values"),
    ("Open,High,Low,Close\n1,2,0.5,1.5\n1.5,2,1,1.8\n", r"no date column found \(none named date, datetime, "
     r"timestamp, time, and the first column, 'Open', holds numbers\); columns are \['Open', 'High', 'Low', "
     r"'Close'\]. Name the column of timestamps with data.date_column=NAME."),
])
def test_bad_files_get_one_clear_message(tmp_path, content, message) -> None:
    path = str(tmp_path / "missing.csv") if content is None else _write(tmp_path, content)
    with pytest.raises(DataError, match=message):
        load_data(data_config("csv", path=path))


def test_unsorted_rows_are_sorted_with_a_warning(tmp_path) -> None:
    path = _write(tmp_path, "date,close\n2020-01-03,3\n2020-01-01,1\n2020-01-02,2\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bars = load_data(data_config("csv", path=path)).bars
    assert list(bars["close"]) == [1, 2, 3]
    assert any("sorted them" in str(w.message) for w in caught)


def test_an_unknown_source_or_key_is_named_with_what_is_allowed() -> None:
    with pytest.raises(DataError, match="data.series='yahoo' is not bundled; allowed: sp500, nasdaq"):
        load_data(data_config("sp500", series="yahoo"))
    with pytest.raises(NotFoundError, match="data._target_='my.missing.Source' cannot be imported"):
        load_data(data_config("sp500", _target_="my.missing.Source"))
    with pytest.raises(ConfigTypeError, match="data.n_bar is not a known key; allowed: seed, n_bars, drift, "
                                              "volatility, regimes, autocorrelation, start, end, splits, max_fill, "
                                              "resample. Did you "
                                              "mean data.n_bars?"):
        load_data(data_config("synthetic", n_bar=10))
    with pytest.raises(DataError, match="data.max_fill applies to universes only, but data=data is a single series"):
        load_data(data_config("synthetic", max_fill=2))


def test_a_source_that_returns_something_else_is_a_bug_named_as_such() -> None:
    with pytest.raises(TypeError, match="returned int; a data source returns an OHLCV DataFrame"):
        load_data({"_target_": "tests.test_data.ReturnsAnInt", "splits": [0.6, 0.2, 0.2]})


class ReturnsAnInt:
    def load(self) -> int:
        return 3


def test_periods_per_year_is_inferred_from_the_bars_density() -> None:
    assert infer_periods_per_year(load_data(data_config("sp500")).bars.index) == 252
    assert infer_periods_per_year(pd.date_range("2010-01-01", periods=300, freq="W")) == 52
    weekdays = pd.date_range("2020-01-01", periods=24 * 700, freq="h")
    hourly_fx = weekdays[weekdays.dayofweek < 5]  # trades 24 hours, 5 days a week
    assert 6000 < infer_periods_per_year(hourly_fx) < 6400
    with pytest.raises(DataError, match="periods_per_year=auto needs dated bars"):
        infer_periods_per_year(pd.RangeIndex(100))


def test_a_series_is_the_one_column_book_from_the_data_boundary_on() -> None:
    book = load_data(data_config("sp500", start="2010-01-01"), "sp500")
    assert book.series and book.symbols == ["sp500"] and book.n_assets == 1
    assert book.close.shape == (len(book.bars), 1) and book.index.equals(book.bars.index)
    np.testing.assert_array_equal(book.close[:, 0], book.bars["close"].to_numpy())
    universe = load_data(data_config("bundled_universe"))
    assert not universe.series and universe.n_assets == 4


def test_the_data_digest_names_the_bars_not_how_they_were_loaded() -> None:
    """The ledger's data identity: the same bars give the same digest; a changed bar, or other dates, another."""
    from runner.data.loader import load_data
    from tests.conftest import data_config

    first = load_data(data_config("synthetic", seed=1, n_bars=300), "synthetic")
    assert first.digest() == load_data(data_config("synthetic", seed=1, n_bars=300), "synthetic").digest()
    assert first.digest() != load_data(data_config("synthetic", seed=2, n_bars=300), "synthetic").digest()
    assert first.digest() != load_data(data_config("synthetic", seed=1, n_bars=301), "synthetic").digest()
    changed = load_data(data_config("synthetic", seed=1, n_bars=300), "synthetic")
    changed.frames["synthetic"] = changed.frames["synthetic"].copy()
    changed.frames["synthetic"].iloc[-1, 0] *= 1.0001  # one open of one bar
    assert changed.digest() != first.digest() and len(first.digest()) == 16
