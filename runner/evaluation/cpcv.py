"""Combinatorial purged cross-validation (López de Prado, *Advances in Financial Machine Learning*, ch. 12): the
bars cut into N groups, a model fitted on every combination of N - k groups and forecasting the other k, and the
test groups recombined into C(N, k) * k / N full out-of-sample paths, each backtested from ``initial_capital``.

Layout (as skfolio's ``CombinatorialPurgedCV``, which a test checks it against): groups of ``n_bars // N`` bars,
the last one taking the remainder; splits in ``itertools.combinations`` order; path p takes each group's forecast
from the p-th split that tests it. Purge: a row's target is the next bar's return (horizon 1), so the ``PURGE``
bar before each test group (its target is in the group) and the ``PURGE`` bar after it leave training; the
embargo drops ``embargo_bars`` more after each test group, against serial correlation. A model's features look
back ``warmup + sequence_length`` bars: a training row closer than that after a test group reads test-group
prices as inputs (never its targets); an embargo of at least that reach keeps them out entirely.

Each split's model is rebuilt from the seed, standardised on its own fitting rows, fitted on its training bars
but their last fifth (chronologically), which early-stops it. A rule (``model=none``) fits nothing: every path is
the same backtest.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd

from runner.config.schema import Doc
from runner.engine.backtest import BacktestResult, run_backtest
from runner.errors import DataError

if TYPE_CHECKING:
    from runner.evaluation.outcome import Prepared
    from runner.ml.dataset import Dataset

PURGE = 1  # bars: the target horizon (row t's target is close[t+1] / close[t] - 1)
VAL_SHARE = 0.2  # the chronological end of each split's training bars that early-stops its model
SUMMARY = ("sharpe_ratio", "total_return", "cagr", "max_drawdown", "sortino_ratio", "calmar_ratio", "num_trades")
QUANTILES = {"p05": 5, "p50": 50, "p95": 95}


@dataclass(frozen=True)
class Split:
    number: int
    test_groups: tuple[int, ...]
    train: np.ndarray  # bool per bar: training bars after purge and embargo


@dataclass
class CpcvPlan:
    """The groups (half-open bar ranges), the splits, and which split each path takes each group from."""

    groups: list[tuple[int, int]]
    splits: list[Split]
    paths: np.ndarray  # (n_groups, n_paths): split number
    embargo: int

    @property
    def n_paths(self) -> int:
        return self.paths.shape[1]

    def splits_table(self) -> pd.DataFrame:
        """``backtest/cpcv_splits``: per split, its runs of train and test bars (0-based, inclusive)."""
        rows = []
        for split in self.splits:
            test = np.zeros(len(split.train), dtype=bool)
            for g in split.test_groups:
                test[self.groups[g][0]:self.groups[g][1]] = True
            for role, mask in (("train", split.train), ("test", test)):
                edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
                rows += [(split.number, role, int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        return pd.DataFrame(rows, columns=["split", "role", "start_bar", "end_bar"])


@dataclass
class Cpcv:
    """What a CPCV run produced: one backtest per path, the per-path metrics and their distribution."""

    plan: CpcvPlan
    paths: list[BacktestResult]
    path_metrics: dict[str, list[float]]  # metric -> one value per path
    distribution: dict[str, float]  # cpcv_{metric}_{mean,std,p05,p50,p95}, cpcv_n_splits, cpcv_n_paths, cpcv_pbo
    trainings: list[Any]
    dataset: Dataset | None

    def paths_table(self) -> pd.DataFrame:
        """``backtest/cpcv_paths``: ``timestamp, path, close, strategy_return, equity``, one row per bar and path
        (``close``: the traded level, a universe's equal-weight index: buy and hold for the reality checks)."""
        return pd.concat([pd.DataFrame({"timestamp": p.index, "path": k, "close": p.close,
                                        "strategy_return": p.strategy_returns, "equity": p.equity})
                          for k, p in enumerate(self.paths)], ignore_index=True)


class CpcvEvaluation:
    """``evaluation=cpcv``: a model fitted on every combination of ``groups - test_groups`` groups, the forecasts
    recombined into full out-of-sample paths (``cpcv_*`` metrics). Its values live in ``conf/evaluation/cpcv.yaml``."""

    def __init__(self,
                 groups: Annotated[int, Doc("N: the bars are cut into this many contiguous groups", "", ">= 3")],
                 test_groups: Annotated[int, Doc("k: groups each split tests (C(N, k) splits, C(N, k) k / N paths)",
                                                 "", "2 <= k < N")],
                 embargo_bars: Annotated[int, Doc(
                     "bars after each test group left out of training (besides the 1-bar purge on each side); "
                     "at least the strategy's warm-up plus the model's window keeps test prices out of every input",
                     "bars", ">= 0")]) -> None:
        self.groups, self.test_groups, self.embargo_bars = groups, test_groups, embargo_bars

    def layout(self, n_bars: int, with_model: bool, min_train: int) -> None:
        """No walk-forward folds: ``plan`` lays out the splits."""
        return None

    def plan(self, n_bars: int, with_model: bool, min_train: int) -> CpcvPlan:
        """The groups, splits and paths over ``n_bars``, or a DataError naming what does not fit."""
        n, k, embargo = self.groups, self.test_groups, self.embargo_bars
        for key, value, low in (("groups", n, 3), ("test_groups", k, 2), ("embargo_bars", embargo, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"evaluation.{key}={value!r} must be an integer >= {low}.")
        if k >= n:
            raise DataError(f"evaluation.test_groups={k} must be below evaluation.groups={n} (a split trains on the "
                            "other groups).")
        size = n_bars // n
        if PURGE * 2 + embargo >= size - 1:
            raise DataError(f"cpcv does not fit the data: {n_bars} bars in {n} groups of {size}, but the purge "
                            f"({PURGE} bar each side) and evaluation.embargo_bars={embargo} take "
                            f"{2 * PURGE + embargo} bars around each test group; use fewer groups or a shorter "
                            "embargo, or more data.")
        group_of = np.minimum(np.arange(n_bars) // size, n - 1)
        groups = [(int(g * size), int(n_bars if g == n - 1 else (g + 1) * size)) for g in range(n)]
        splits = []
        for number, tested in enumerate(itertools.combinations(range(n), k)):
            test = np.isin(group_of, tested)
            train = ~test
            starts = np.flatnonzero(np.diff(test.astype(np.int8)) == 1) + 1  # first bar of each test run
            ends = np.flatnonzero(np.diff(test.astype(np.int8)) == -1) + 1  # first bar after it
            for start in starts:
                train[max(0, start - PURGE):start] = False
            for end in ends:
                train[end:end + PURGE + embargo] = False
            fitted = int(train.sum() * (1 - VAL_SHARE))
            if with_model and fitted < min_train:
                raise DataError(f"cpcv split {number} (testing groups {list(tested)}) keeps {int(train.sum())} "
                                f"training bars, of which {fitted} fit the model; it needs >= {min_train}. Use "
                                "fewer evaluation.test_groups, or more data.")
            splits.append(Split(number, tested, train))
        membership = np.zeros((n, len(splits)), dtype=bool)
        for split in splits:
            membership[list(split.test_groups), split.number] = True
        paths = np.array([np.flatnonzero(row) for row in membership])  # (groups, C(N-1, k-1))
        return CpcvPlan(groups, splits, paths, embargo)


def _split_masks(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fit, early-stopping) bars of one split: the last ``VAL_SHARE`` of its training bars early-stop, and the
    fitting bar just before them (its target is the first of theirs) is left out."""
    bars = np.flatnonzero(train)
    first_val = bars[len(bars) - max(2, int(len(bars) * VAL_SHARE))]
    fit, val = train.copy(), train.copy()
    fit[first_val - 1:] = False
    val[:first_val] = False
    return fit, val


def split_forecasts(prepared: Prepared, plan: CpcvPlan, check_stop: Any) -> tuple[list[np.ndarray], list[Any],
                                                                                 Dataset | None]:
    """One model per split (same seed, its own standardisation), forecasting every bar; only its test groups'
    forecasts are used. Features are computed once for all splits."""
    from runner.ml.dataset import masked_panel_dataset, panel_forecast
    from runner.ml.training import forecast, train_model

    book = prepared.book
    features, close = book.features(prepared.strategy.features), book.close
    forecasts, trainings, dataset = [], [], None
    for split in plan.splits:
        fit, val = _split_masks(split.train)
        dataset = masked_panel_dataset(features, close, fit, val, ~split.train, prepared.sequence_length)
        n_features = dataset.features.shape[1]
        training = train_model(lambda n=n_features: prepared.model_factory(n_features=n), dataset, prepared.trainer,
                               prepared.seed, threads=prepared.torch_threads, check_stop=check_stop,
                               label=f"split {split.number + 1}/{len(plan.splits)}")
        forecasts.append(panel_forecast(forecast(training.model, dataset), len(close), book.n_assets))
        trainings.append(training)
        check_stop()
    return forecasts, trainings, dataset


def cpcv(prepared: Prepared, check_stop: Any = lambda: None) -> Cpcv:
    """Forecasts per split (or the rule), recombined into paths, one backtest per path, and their distribution."""
    from runner.stats import probability_of_backtest_overfitting

    plan, book, strategy = prepared.cpcv, prepared.book, prepared.strategy
    n_bars = len(book.index)
    trainings, dataset = [], None
    if prepared.model_factory is None:
        weights = strategy.portfolio_weights(book)
        path_weights = [weights] * plan.n_paths
    else:
        reach = strategy.warmup + prepared.sequence_length
        if plan.embargo < reach:
            print(f"warning: evaluation.embargo_bars={plan.embargo} is below the features' reach ({reach} bars: the "
                  "warm-up plus the model's window): training rows just after a test group read its prices as "
                  "inputs (never its targets).", file=sys.stderr)
        forecasts, trainings, dataset = split_forecasts(prepared, plan, check_stop)
        path_weights = []
        for p in range(plan.n_paths):
            combined = np.full(book.close.shape, np.nan)
            for g, (start, stop) in enumerate(plan.groups):
                combined[start:stop] = forecasts[plan.paths[g, p]][start:stop]
            path_weights.append(strategy.portfolio_weights_from_forecast(combined, book))
    paths = [run_backtest(book.close, w, 0, 0, prepared.backtest, book.index, segments={"path": (0, n_bars)},
                          symbols=book.symbols) for w in path_weights]
    names = list(paths[0].metrics["path"])
    path_metrics = {name: [p.metrics["path"][name] for p in paths] for name in names}
    distribution: dict[str, float] = {"cpcv_n_splits": float(len(plan.splits)), "cpcv_n_paths": float(plan.n_paths)}
    for name in SUMMARY:
        values = np.asarray(path_metrics[name], dtype=float)
        finite = values[np.isfinite(values)]
        distribution[f"cpcv_{name}_mean"] = float(finite.mean()) if len(finite) else math.nan
        distribution[f"cpcv_{name}_std"] = float(finite.std(ddof=1)) if len(finite) > 1 else (
            0.0 if len(finite) == 1 else math.nan)
        for key, q in QUANTILES.items():
            distribution[f"cpcv_{name}_{key}"] = float(np.percentile(finite, q)) if len(finite) else math.nan
    returns = np.column_stack([p.strategy_returns[1:] for p in paths])
    distinct = plan.n_paths > 1 and bool(np.ptp(returns, axis=1).max() > 0)  # a rule's paths are one backtest
    distribution["cpcv_pbo"] = (probability_of_backtest_overfitting(returns, 16)[0]
                                if distinct and len(returns) >= 32 and np.isfinite(returns).all() else math.nan)
    return Cpcv(plan, paths, path_metrics, distribution, trainings, dataset)
