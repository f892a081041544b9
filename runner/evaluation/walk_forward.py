"""Walk-forward evaluation: the fold layout, a model refitted per fold on the bars before it, and the stitched
out-of-sample record (one continuous equity from ``initial_capital`` over the folds' test stretches).

Fold k (half-open bar ranges): training ``[train_start, val_start)``, validation ``[val_start, train_end)``,
``gap`` bars left out, test ``[test_start, test_end)``; the test stretches are back to back. Expanding
windows start at bar 0, rolling ones ``train_bars`` before ``train_end``. A model's row t has the target
``close[t+1]/close[t] - 1``, so the last validation target is bar ``train_end``, which lies in the gap: no
training target overlaps a test stretch when ``gap >= 1``. Without a model, the strategy's rule is unchanged
and walk-forward re-slices one backtest. A universe goes the same way: one pooled model per fold, one
portfolio backtest of the stitched weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd

from runner.config.schema import Doc
from runner.data.series import DataError
from runner.engine.backtest import BacktestResult, run_backtest
from runner.engine.portfolio import rebalance_mask

if TYPE_CHECKING:
    from runner.evaluation.outcome import Prepared
    from runner.ml.dataset import Dataset

MIN_TEST_BARS = 2
FOLD_COLUMNS = ("fold", "train_start", "train_end", "val_start", "val_end", "test_start", "test_end")


@dataclass(frozen=True)
class Fold:
    number: int
    train_start: int
    val_start: int
    train_end: int  # exclusive: validation ends here; the gap follows
    test_start: int
    test_end: int  # exclusive


@dataclass
class WalkForward:
    """What a walk-forward run produced: the stitched record, per-fold test metrics and each fold's training."""

    folds: list[Fold]
    oos: BacktestResult  # from bar folds[0].test_start - offset; segment "oos" from offset, then any "final_test"
    fold_metrics: dict[str, list[float]]  # metric -> one value per fold (the fold's own test stretch)
    trainings: list[Any]
    dataset: Dataset  # the last fold's (its standardisation goes with the logged model)
    offset: int = 1  # bars of ``oos`` before the record: back to the rebalance the first test bar's book comes from
    final: Fold | None = None  # evaluation.final_test_bars: the untouched last stretch, after every fold

    def folds_table(self, index: pd.Index) -> pd.DataFrame:
        """First and last bar (timestamps) of each fold's ranges: ``backtest/folds``."""
        rows = [(f.number, index[f.train_start], index[f.val_start - 1], index[f.val_start], index[f.train_end - 1],
                 index[f.test_start], index[f.test_end - 1]) for f in self.folds]
        return pd.DataFrame(rows, columns=list(FOLD_COLUMNS))

    def stitched_table(self) -> pd.DataFrame:
        """The out-of-sample record, one row per test bar: ``backtest/walk_forward``."""
        frame = self.oos.portfolio_values().iloc[self.offset:self.oos.bounds["oos"][1]].drop(columns="segment")
        fold = np.concatenate([np.full(f.test_end - f.test_start, f.number) for f in self.folds])
        frame.insert(1, "fold", fold)
        return frame.reset_index(drop=True)

    def final_table(self) -> pd.DataFrame:
        """The untouched final stretch, one row per bar: ``backtest/final_test`` (the same book, carried on)."""
        start, stop = self.oos.bounds["final_test"]
        return self.oos.portfolio_values().iloc[start:stop].drop(columns="segment").reset_index(drop=True)


class WalkForwardEvaluation:
    """``evaluation=walk_forward``: refit per fold on the bars before it, trade the next stretch, judge the stitched
    out-of-sample record (``oos_*``). Its keys' values live in ``conf/evaluation/walk_forward.yaml``."""

    def __init__(self,
                 folds: Annotated[int, Doc("out-of-sample stretches, each traded by a model fitted before it", "",
                                           ">= 1")],
                 window: Annotated[str, Doc("each fold trains on every bar before it, or on the last train_bars", "",
                                            "expanding | rolling")],
                 train_bars: Annotated[int | None, Doc(
                     "the rolling window, or the first fold's training bars when expanding (validation included)",
                     "bars", "null (half the bars), or val_bars plus the warm-up and 10 rows to fit")],
                 val_bars: Annotated[int | None, Doc("the end of each training window kept for early stopping", "bars",
                                                     "null (a fifth of train_bars) or >= 2")],
                 test_bars: Annotated[int | None, Doc("each fold's out-of-sample stretch", "bars",
                                                      "null (the bars after the first window, split evenly) or >= 2")],
                 gap: Annotated[int, Doc("bars left out between a fold's training bars and its test bars (no training "
                                         "target overlaps the test stretch)", "bars",
                                         ">= 1 (the target horizon) with a model, >= 0 without")],
                 final_test_bars: Annotated[int, Doc(
                     "the last bars, kept out of every fold and of selection: the untouched final test (final_test_* "
                     "metrics; a model for it is fitted like a fold's, on the bars before it)", "bars",
                     f"0 (none) or >= {MIN_TEST_BARS}")] = 0) -> None:
        self.folds, self.window, self.gap = folds, window, gap
        self.train_bars, self.val_bars, self.test_bars = train_bars, val_bars, test_bars
        self.final_test_bars = final_test_bars

    def layout(self, n_bars: int, with_model: bool, min_train: int) -> list[Fold]:
        """The folds over the bars before the final test (``fold_layout``)."""
        final = self.final_test_bars
        if isinstance(final, bool) or not isinstance(final, int) or final < 0 or 0 < final < MIN_TEST_BARS:
            raise DataError(f"evaluation.final_test_bars={final!r} must be 0 (no final test) or an integer >= "
                            f"{MIN_TEST_BARS}.")
        try:
            return fold_layout(n_bars - final, self, with_model, min_train)
        except DataError as error:
            if not final:
                raise
            raise DataError(f"{error} (evaluation.final_test_bars={final} keeps the last {final} of the {n_bars} "
                            "bars out of the folds)") from None

    def final_fold(self, n_bars: int, folds: list[Fold]) -> Fold | None:
        """The final test as one more fold after ``folds``: its training window laid out as theirs (expanding, or
        the same rolling length), ``gap`` bars before its test stretch, the last ``final_test_bars`` bars."""
        if not self.final_test_bars:
            return None
        last = folds[-1]
        test_start = n_bars - self.final_test_bars
        train_end = test_start - self.gap
        start = 0 if self.window == "expanding" else train_end - (last.train_end - last.train_start)
        return Fold(len(folds), start, train_end - (last.train_end - last.val_start), train_end, test_start, n_bars)


def fold_layout(n_bars: int, conf: WalkForwardEvaluation, with_model: bool, min_train: int) -> list[Fold]:
    """The folds over ``n_bars``, or a DataError naming what does not fit and a setting that would."""
    folds, gap = conf.folds, conf.gap
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise DataError(f"evaluation.folds={folds!r} must be an integer >= 1.")
    if conf.window not in ("expanding", "rolling"):
        raise DataError(f"evaluation.window={conf.window!r} is not valid; allowed: expanding, rolling.")
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < (1 if with_model else 0):
        raise DataError(f"evaluation.gap={gap!r} must be an integer >= {1 if with_model else 0}"
                        + (" (the target horizon: a model's last training target is the next bar)" if with_model
                           else "") + ".")
    train = conf.train_bars if conf.train_bars is not None else n_bars // 2
    val = conf.val_bars if conf.val_bars is not None else max(2, train // 5)
    free = n_bars - train - gap
    test = conf.test_bars if conf.test_bars is not None else free // folds
    settings = f"({n_bars} bars; train_bars={train}, val_bars={val}, test_bars={test}, folds={folds}, gap={gap})"
    if train < min_train + val:
        raise DataError(f"evaluation.train_bars={train} is too short: it needs >= {min_train + val} (val_bars plus "
                        f"the strategy's warm-up and enough rows to fit) {settings}. Set evaluation.train_bars="
                        f"{min_train + val} or more, or a smaller evaluation.val_bars.")
    if val < (2 if with_model else 0):
        raise DataError(f"evaluation.val_bars={val} is too short: a model needs >= 2 bars to early-stop on "
                        f"{settings}.")
    if test < MIN_TEST_BARS or train + gap + folds * test > n_bars:
        fits = free // max(test, MIN_TEST_BARS) if free > 0 else 0
        hint = (f"evaluation.folds={fits}" if fits >= 1 else
                f"a shorter evaluation.train_bars (under {n_bars - gap - MIN_TEST_BARS})")
        raise DataError(f"walk-forward does not fit the data: train_bars + gap + folds x test_bars = {train} + "
                        f"{gap} + {folds} x {test} = {train + gap + folds * test} bars, with test stretches of at "
                        f"least {MIN_TEST_BARS} bars, but there are {n_bars} {settings}. Use {hint}, or more data.")
    out = []
    for k in range(folds):
        test_start = train + gap + k * test
        test_end = n_bars if conf.test_bars is None and k == folds - 1 else test_start + test
        train_end = test_start - gap
        start = 0 if conf.window == "expanding" else train_end - train
        out.append(Fold(k, start, train_end - val, train_end, test_start, test_end))
    return out


def _fold_forecasts(prepared: Prepared, folds: list[Fold], check_stop: Any) -> tuple[np.ndarray, list[Any], Any]:
    """One model per fold (same seed, that fold's bars and standardisation only); its forecasts of the fold's
    test bars, placed in one forecast per bar (per bar and asset for a universe; NaN before the first test
    bar: flat)."""
    from runner.ml.dataset import build_panel_dataset, panel_forecast
    from runner.ml.training import forecast, train_model

    book = prepared.book
    features, close = book.features(prepared.strategy.features), book.close
    combined = np.full(close.shape, np.nan)
    trainings, dataset = [], None
    for fold in folds:
        label = f"fold {fold.number + 1}/{len(folds)}" if fold.number < len(prepared.folds) else "final test"
        a = fold.train_start
        dataset = build_panel_dataset([f.iloc[a:] for f in features], close[a:], fold.val_start - a,
                                      fold.train_end - a, prepared.sequence_length)
        n_features = dataset.features.shape[1]
        training = train_model(lambda n=n_features: prepared.model_factory(n_features=n), dataset, prepared.trainer,
                               prepared.seed, threads=prepared.torch_threads, check_stop=check_stop, label=label)
        predicted = panel_forecast(forecast(training.model, dataset), len(close) - a, book.n_assets)
        combined[fold.test_start:fold.test_end] = predicted[fold.test_start - a:fold.test_end - a]
        trainings.append(training)
        check_stop()
    return combined, trainings, dataset


def walk_forward(prepared: Prepared, check_stop: Any = lambda: None) -> WalkForward:
    """Weights per fold (refitted models, or the rule), then the stitched and the per-fold backtests."""
    folds, final, book, strategy = prepared.folds, prepared.final_fold, prepared.book, prepared.strategy
    trainings, dataset = [], None
    if prepared.model_factory is None:
        weights = strategy.portfolio_weights(book)
    else:
        forecasts, trainings, dataset = _fold_forecasts(prepared, [*folds, *([final] if final else [])], check_stop)
        weights = strategy.portfolio_weights_from_forecast(forecasts, book)
    first = schedule_anchor(prepared.backtest.rebalance, book.index, folds[0].test_start - 1)
    end, stop = folds[-1].test_end, final.test_end if final else folds[-1].test_end
    segments = {"oos": (folds[0].test_start - first, end - first)}
    if final:  # the same book carried on: the oos segment's metrics are those of a book that stops at its end
        segments["final_test"] = (final.test_start - first, stop - first)
    close, index, symbols = book.close[first:stop], book.index[first:stop], book.symbols
    oos = run_backtest(close, weights[first:stop], 0, 0, prepared.backtest, index, segments=segments, symbols=symbols)
    per_fold = run_backtest(close[:end - first], weights[first:end], 0, 0, prepared.backtest, index[:end - first],
                            segments={f"fold{f.number}": (f.test_start - first, f.test_end - first) for f in folds},
                            symbols=symbols)
    names = list(oos.metrics["oos"])
    fold_metrics = {name: [per_fold.metrics[f"fold{f.number}"][name] for f in folds] for name in names}
    return WalkForward(folds, oos, fold_metrics, trainings, dataset, folds[0].test_start - first, final)


def schedule_anchor(rebalance: int | str, index: pd.DatetimeIndex, bar: int) -> int:
    """Where the out-of-sample book starts: the whole series' last rebalance at or before ``bar`` (the bar before
    the first test bar). From there on its rebalance schedule (every k bars, weekly, monthly), its drift between
    rebalances and so its returns are the holdout backtest's on the same bars; only that start's own trade, into
    the book from cash, costs what the holdout's trade there did not."""
    mask = rebalance_mask(rebalance, index, len(index))
    return bar if mask is None else int(np.flatnonzero(mask[:bar + 1])[-1])
