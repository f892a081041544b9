"""Whether a sweep's winner can be believed, given every trial of its sweep name (``runner.sweeps.ledger``): its
deflated Sharpe at N and at the effective N, PBO, the reality checks against buy and hold, and its held-out test
beside the median trial's, with a bootstrap interval.

Conventions. Every statistic uses the returns the winner was selected on: the per-bar strategy returns of the
segment the selection metric names (``val`` for ``val_sharpe_ratio``, ``oos`` for walk-forward's
``oos_sharpe_ratio``), less the risk-free rate per bar (``backtest.risk_free_rate / periods_per_year``) exactly as
the logged Sharpe subtracts it. Sharpe ratios in the DSR are per bar; ``test_sharpe_ci`` is annualised like the
logged ``*_sharpe_ratio``. ``n_trials`` counts every configuration of the sweep name over all launches, failed
ones included; the Sharpe variance, N_eff, PBO and SPA use one finished run per configuration.

The held-out test is what no trial was fitted or selected on: ``test`` after a holdout selection on ``val``;
after a walk-forward selection on ``oos``, only ``final_test`` (``evaluation.final_test_bars``). Without one the
summary says so and gives no test rank. A CPCV selection (``cpcv_*``) is judged on the paths' mean return per bar.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.stats import deflated_sharpe_ratio, effective_number_of_trials, moments, probability_of_backtest_overfitting

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd
    from mlflow.entities import Run

    from runner.sweeps.bootstrap_worker import BootstrapWorker
    from runner.sweeps.ledger import Ledger

SEGMENTS = ("train", "val", "test", "oos", "final_test", "cpcv")  # oos: walk-forward's stitched record; cpcv: paths
COMPARED = ("sharpe_ratio", "total_return", "max_drawdown", "num_trades")
TABLES = {"oos": "walk_forward", "final_test": "final_test", "cpcv": "cpcv_paths"}  # segments with their own table


def selection_segment(metric: str) -> str | None:
    for segment in sorted(SEGMENTS, key=len, reverse=True):
        if metric.startswith(f"{segment}_"):
            return segment
    return None


def held_out_segment(segment: str, winner: Run) -> str | None:
    """The segment no trial was fitted or selected on, or None where the selection left none untouched."""
    if segment in ("train", "val"):
        return "test"
    if segment == "oos" and "final_test_sharpe_ratio" in winner.data.metrics:
        return "final_test"
    return None


def periods_per_year(run: Run) -> float:
    """The bars a year the run's annualised metrics used (NaN when it logged neither param)."""
    params = run.data.params
    return float(params.get("backtest.periods_per_year_used", params.get("backtest.periods_per_year", "nan")))


def per_bar_risk_free(run: Run) -> float:
    """The risk-free rate per bar that the run's logged Sharpe subtracts (0 for runs without the param)."""
    rate, ppy = float(run.data.params.get("backtest.risk_free_rate", "0") or 0), periods_per_year(run)
    return rate / ppy if rate and math.isfinite(ppy) else 0.0


def segment_table(run: Run, segment: str) -> pd.DataFrame:
    """The run's bars of one segment (``segment_rows``), read from the run's artifact location directly (a
    ``runs:/`` URI would look it up twice more)."""
    from runner.tracking.tables import read_backtest_table

    columns = ["timestamp", "close", "strategy_return"] + ([] if segment in TABLES else ["segment"])
    return segment_rows(read_backtest_table(run.info.artifact_uri, TABLES.get(segment, "portfolio_values"),
                                            columns=columns), segment)


def segment_rows(table: pd.DataFrame, segment: str) -> pd.DataFrame:
    """A per-bar table's rows of one segment: ``timestamp``, ``strategy_return`` and ``benchmark_return`` (buy and
    hold of the same bars). ``table``: the segment's own table (oos, final_test, cpcv), or one with a ``segment``
    column (portfolio_values, as logged or as the engine's result gives it)."""
    import pandas as pd

    if segment == "cpcv":  # the paths' mean return per bar: what cpcv_sharpe_ratio_mean averages over
        table = table.groupby("timestamp", sort=True).agg(close=("close", "first"),
                                                          strategy_return=("strategy_return", "mean")).reset_index()
    benchmark = table["close"].pct_change().to_numpy()  # the level's (a universe: its equal-weight index)
    # a category or, in older runs, a string; cut in numpy (a third of pandas' time, the same values)
    keep = (table["segment"] == segment).to_numpy() if segment not in TABLES else slice(None)
    return pd.DataFrame({"timestamp": table["timestamp"].array[keep],  # its dtype kept (a time zone, say)
                         "strategy_return": table["strategy_return"].to_numpy()[keep],
                         "benchmark_return": benchmark[keep]})


def excess_returns(run: Run, segment: str, table: pd.DataFrame | None = None) -> np.ndarray:
    """The run's per-bar strategy returns on one segment (from ``table`` when read already), less the per-bar
    risk-free rate."""
    table = segment_table(run, segment) if table is None else table
    returns = table["strategy_return"].to_numpy(dtype=float)
    return returns[np.isfinite(returns)] - per_bar_risk_free(run)


def sentence(stats: dict[str, Any]) -> str:
    """The lines a researcher reads first: the scope, the deflated Sharpe (at N; at N_eff beside it), PBO, the SPA
    p-value and the test interval."""
    dsr, n, segment = stats["deflated_sharpe_ratio"], stats["n_trials"], stats["segment"]
    if dsr >= 0.95:
        verdict = "is unlikely to be luck alone"
    elif dsr >= 0.5:
        verdict = "is weak evidence of an edge at best"
    else:
        verdict = "is what luck alone would often produce"
    effective = stats.get("n_trials_effective")
    scope = f"{n} trials" + (f" ({effective:.1f} effective)" if effective is not None else "")
    text = f"deflated Sharpe {dsr:.2f} at N = {n}: across {scope} this {segment} Sharpe {verdict}"
    if stats.get("deflated_sharpe_ratio_effective") is not None:
        text += f" (at N_eff: {stats['deflated_sharpe_ratio_effective']:.2f})"
    if stats.get("pbo") is not None:
        text += f"; PBO {stats['pbo']:.2f}"
    second = []
    if stats.get("spa_pvalue") is not None:
        second.append(f"SPA p = {stats['spa_pvalue']:.3f} against buy and hold over the whole search ("
                      + ("some trial beats it" if stats["spa_pvalue"] < 0.05 else "no trial shown to beat it") + ")")
    ci = stats.get("test_sharpe_ci")
    if ci and all(math.isfinite(v) for v in ci):
        second.append(f"{stats['held_out']} Sharpe 95% interval [{ci[0]:.2f}, {ci[1]:.2f}]")
    elif stats.get("held_out") is None:
        second.append(f"no untouched test: the 'test' shown is the {segment} segment it was selected on ("
                      + ("set evaluation.final_test_bars" if segment == "oos" else
                         "keep a final stretch out with data.end and run the winner on it after") + ")")
    return text + "." + ("\n" + "; ".join(second) + "." if second else "")


def _same_bars(frames: dict[str, pd.DataFrame]) -> str | None:
    """None when every trial's segment has the same timestamps, else why the joint statistics are left out."""
    stamps = [f["timestamp"].to_numpy() for f in frames.values()]
    if any(len(s) != len(stamps[0]) or (s != stamps[0]).any() for s in stamps):
        return "the trials' returns are not on the same bars (these trials ran on different data)"
    return None


def _pbo(matrix: np.ndarray) -> tuple[float | None, str | None]:
    if matrix.shape[1] < 2:
        return None, "PBO needs at least 2 finished trials"
    bars = len(matrix)
    partitions = min(16, (bars // 2) // 2 * 2)
    if partitions < 2:
        return None, f"PBO needs at least 4 bars in the segment, it has {bars}"
    return probability_of_backtest_overfitting(matrix, partitions)[0], None


def _joint(stats: dict[str, Any], frames: dict[str, pd.DataFrame], excess: dict[str, np.ndarray], winner_id: str,
           sr: float, n: int, skew: float, kurtosis: float, sr_variance: float,
           worker: BootstrapWorker | None) -> None:
    """N_eff and its DSR, PBO and the reality checks: the statistics that need every trial on the same bars."""
    from runner.bootstrap import reality_checks

    if worker is not None:
        reality_checks = worker.reality_checks
    why = _same_bars(frames)
    if why:
        stats["pbo_reason"] = stats["spa_reason"] = why
        stats["pbo"] = None
        return
    ids = list(frames)
    matrix = np.column_stack([excess[i] for i in ids])
    stats["pbo"], why = _pbo(matrix)
    if why:
        stats["pbo_reason"] = why
    effective = effective_number_of_trials(matrix) * stats["n_trials"] / len(ids)  # failed trials at full weight
    stats["n_trials_effective"] = float(min(stats["n_trials"], max(1.0, effective)))
    if math.isfinite(sr):
        stats["deflated_sharpe_ratio_effective"] = deflated_sharpe_ratio(sr, n, skew, kurtosis,
                                                                         stats["n_trials_effective"], sr_variance)
    paired = [np.column_stack([f["strategy_return"].to_numpy(float), f["benchmark_return"].to_numpy(float)])
              for f in frames.values()]
    usable = np.all([np.isfinite(p).all(axis=1) for p in paired], axis=0)
    if usable.sum() < 10:
        stats["spa_reason"] = f"the reality checks need >= 10 bars with a benchmark return, there are {usable.sum()}"
        return
    benchmark = paired[ids.index(winner_id)][usable, 1]
    stats.update(reality_checks(benchmark, np.column_stack([p[usable, 0] for p in paired])))


def trials_statistics(metric: str, ledger: Ledger, members: list[Run], winner_id: str,
                      known: Mapping[str, pd.DataFrame] | None = None, worker: BootstrapWorker | None = None,
                      ) -> dict[str, Any]:
    """The trials statistics of a sweep's winner (see the module docstring), with the reasons for any left out.
    ``known``: run id -> its selection segment's ``segment_rows``, where this process has them already (the batch
    launcher's configurations); the others' are read from their logged tables. ``worker``: the sweep's
    ``BootstrapWorker``, which runs the bootstrap tests (the same numbers); without one they run here."""
    from runner.bootstrap import sharpe_interval

    if worker is not None:
        sharpe_interval = worker.sharpe_interval
    segment = selection_segment(metric)
    stats: dict[str, Any] = {"n_trials": ledger.n_trials, "scope": ledger.scope, "segment": segment}
    if segment is None:
        stats["reason"] = f"{metric} names no segment (train/val/test/oos/cpcv), so there is no Sharpe to deflate"
        return stats
    finished = [r for r in members if r.info.status == "FINISHED"]
    winner = next(r for r in finished if r.info.run_id == winner_id)
    known = known or {}
    frames = {r.info.run_id: known[r.info.run_id] if r.info.run_id in known else segment_table(r, segment)
              for r in finished}
    excess = {r.info.run_id: excess_returns(r, segment, frames[r.info.run_id]) for r in finished}
    sharpes = [s for s in (moments(v)[0] for v in excess.values()) if math.isfinite(s)]
    sr_variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    sr, skew, kurtosis, n = moments(excess[winner_id])
    stats.update(trials_sharpe_variance=sr_variance, excess_returns=any(per_bar_risk_free(r) for r in finished))
    if math.isfinite(sr):
        stats["deflated_sharpe_ratio"] = deflated_sharpe_ratio(sr, n, skew, kurtosis, ledger.n_trials, sr_variance)
    else:
        stats["reason"] = f"the winner's {segment} returns have no variance: no Sharpe to deflate"
    _joint(stats, frames, excess, winner_id, sr, n, skew, kurtosis, sr_variance, worker)
    held_out = stats["held_out"] = held_out_segment(segment, winner)
    if held_out is not None:
        test = {name: [r.data.metrics.get(f"{held_out}_{name}", math.nan) for r in finished] for name in COMPARED}
        stats["median_test_metrics"] = {name: float(np.nanmedian(values)) if values else math.nan
                                        for name, values in test.items()}
        winner_test = winner.data.metrics.get(f"{held_out}_sharpe_ratio")
        ordered = sorted((v for v in test["sharpe_ratio"] if math.isfinite(v)), reverse=True)
        stats["winner_test_rank"] = (ordered.index(winner_test) + 1) if winner_test in ordered else None
        stats["test_sharpe_ci"] = sharpe_interval(excess_returns(winner, held_out), periods_per_year(winner))
    if "deflated_sharpe_ratio" in stats:
        stats["sentence"] = sentence(stats)
    return stats


def dsr_from_metrics(top: Any, trials: list[Run], metric: str, n_trials: int | None = None) -> dict[str, Any]:
    """The deflated Sharpe of ``top`` given ``trials`` (one run per configuration in scope; ``n_trials`` of them
    counted, failed ones included, when given), from their logged metrics alone: the per-bar Sharpe is
    ``{seg}_sharpe_ratio / sqrt(backtest.periods_per_year)``, on excess returns as logged."""
    segment = selection_segment(metric)
    count = n_trials if n_trials is not None else len(trials)
    if segment is None:
        return {"n_trials": count, "reason": f"{metric} names no segment"}

    def per_bar(run: Run) -> float:
        return run.data.metrics.get(f"{segment}_sharpe_ratio", math.nan) / math.sqrt(periods_per_year(run))

    metrics = top.data.metrics
    needed = [f"{segment}_{name}" for name in ("sharpe_ratio", "skew", "kurtosis", "num_bars")]
    if any(not math.isfinite(metrics.get(key, math.nan)) for key in needed) or not math.isfinite(per_bar(top)):
        return {"n_trials": count, "reason": f"the top run lacks {segment} Sharpe moments (logged before they "
                                             "existed, or undefined)"}
    sharpes = [s for s in map(per_bar, trials) if math.isfinite(s)]
    n_obs = int(metrics[f"{segment}_num_bars"]) - (1 if segment == "train" else 0)  # return periods
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    return {"n_trials": count, "deflated_sharpe_ratio": deflated_sharpe_ratio(
        per_bar(top), n_obs, metrics[f"{segment}_skew"], metrics[f"{segment}_kurtosis"], count, variance)}
