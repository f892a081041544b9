"""The tearsheet (``runner.views.tearsheet``): self-contained, and each table checked against a straightforward
computation: worst drawdowns on a hand-checkable curve, monthly and yearly returns, trade statistics, the folds."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from runner.evaluation.experiment import compute, prepare
from runner.views.tearsheet import calendar_returns, tearsheet_html, trade_statistics, worst_drawdowns
from tests.test_universe_strategies import composed


def test_worst_drawdowns_on_a_hand_checkable_curve() -> None:
    equity = pd.Series([100.0, 110, 99, 105, 111, 90, 95], index=pd.bdate_range("2024-01-01", periods=7))
    found = worst_drawdowns(equity)
    # 111 -> 90 (not recovered: to the last bar), then 110 -> 99 (back above 110 at 111, bar 4)
    assert found["depth"].tolist() == pytest.approx([1 - 90 / 111, 1 - 99 / 110])
    assert found.loc[1, ["start", "trough"]].tolist() == [equity.index[4], equity.index[5]]
    assert found.loc[1, "recovery"] is None or pd.isna(found.loc[1, "recovery"])
    assert found.loc[2, ["start", "trough", "recovery", "bars"]].tolist() == [*equity.index[[1, 2, 4]], 3]
    assert found["bars"].tolist() == [2, 3] and list(found.index) == [1, 2]


def test_calendar_returns_compound_the_bars() -> None:
    returns = pd.Series([0.01, -0.02, 0.03, 0.01], index=pd.to_datetime(["2023-12-28", "2023-12-29", "2024-01-02",
                                                                         "2024-02-01"]))
    monthly = calendar_returns(returns, "ME")
    assert monthly.tolist() == pytest.approx([1.01 * 0.98 - 1, 0.03, 0.01])
    assert calendar_returns(returns, "YE").tolist() == pytest.approx([1.01 * 0.98 - 1, 1.03 * 1.01 - 1])


def test_a_runs_tearsheet_is_self_contained_and_says_what_a_quant_reads_first() -> None:
    prepared = prepare(composed(["+strategy=momentum", "model=none", "evaluation=walk_forward"]), "sp500")
    outcome = compute(prepared)
    result = outcome.result
    page = tearsheet_html(result, "Momentum on sp500", 252, outcome.walk.folds_table(prepared.book.index))
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    png = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert png and base64.b64decode(png.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count("<h2>oos: ") == 1 and "<h2>Walk-forward folds</h2>" in page
    headings = ("Monthly and yearly returns", "The 5 worst drawdowns", "Trades (round trips closed in the segment)")
    assert all(heading in page for heading in headings)
    for metric in ("alpha", "beta", "information_ratio", "value_at_risk", "conditional_value_at_risk"):
        assert f"<td class=l>{metric}</td>" in page
    assert "rolling statistics over 63 bars" in page

    start, stop = result.bounds["oos"]  # a month of the heatmap: its bars' returns compounded
    returns = pd.Series(result.strategy_returns[start:stop], index=result.index[start:stop]).dropna()
    month = returns[returns.index.to_period("M") == returns.index[40].to_period("M")]
    assert f">{np.prod(1 + month) - 1:.1%}</td>" in page
    stats = trade_statistics(result.trades, start, stop)
    closed = result.trades[~result.trades["is_open"] & (result.trades["exit_bar"] >= start)
                           & (result.trades["exit_bar"] < stop)]
    assert stats["closed"] == len(closed) == result.metrics["oos"]["num_trades"]
    assert stats["best"] == closed["return"].max() and stats["mean bars held"] == closed["bars_held"].mean()
