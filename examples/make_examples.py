"""Writes the example inputs the README's commands read, from data the installed packages ship (no network):

- ``prices.csv``: the S&P 500 index, daily OHLCV 2012-2018, from ``arch`` (``arch.data.sp500``);
- ``universe/``: one CSV per symbol, 2004-08-19 to 2008-10-14 (the span all four share): the S&P 500 and NASDAQ
  Composite indices (``arch``), the WTI crude oil spot price (FRED's DCOILWTICO, shipped by ``arch``; close only)
  and Alphabet's shares (matplotlib's sample data ``goog.npz``).

Prices are rounded to cents. Run from the repository root: ``python examples/make_examples.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from runner.data.series import bundled_bars
from runner.data.sources import bundled_frames

HERE = Path(__file__).resolve().parent


def write(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.rename_axis("date").round(2)
    if frame[["open", "high", "low"]].eq(frame["close"], axis=0).all().all():  # a close-only series (WTI)
        frame = frame[["close"]]
    if "volume" in frame:
        frame["volume"] = frame["volume"].round(0).astype("int64")
    frame.to_csv(path, float_format="%.2f", date_format="%Y-%m-%d")


def main() -> None:
    write(bundled_bars("sp500").loc["2012-01-01":"2018-12-31"], HERE / "prices.csv")
    (HERE / "universe").mkdir(exist_ok=True)
    for symbol, frame in bundled_frames().items():
        shared = frame.loc["2004-08-19":"2008-10-14"].dropna(axis=1, how="all").copy()
        write(shared, HERE / "universe" / f"{symbol}.csv")


if __name__ == "__main__":
    main()
