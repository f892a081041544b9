"""Whether a sweep's winner can be believed: its deflated Sharpe given the trials, PBO over the children,
and its test metrics beside the median child's (``runner.stats`` on the children's own per-bar returns).

Counting: ``n_trials`` is every configuration the sweep evaluated, i.e. every child run of its parent: the
finished, the failed (a failed trial was still tried) and the resumed ones (a resumed job's configuration was
evaluated earlier and stands for it). The Sharpe variance and PBO use the finished trials' per-bar returns on
the segment that the selection metric names (``val`` for ``val_sharpe_ratio``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.stats import deflated_sharpe_ratio, moments, probability_of_backtest_overfitting

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SEGMENTS = ("train", "val", "test", "oos")  # oos: walk-forward's stitched out-of-sample record
COMPARED = ("sharpe_ratio", "total_return", "max_drawdown", "num_trades")


def selection_segment(metric: str) -> str | None:
    prefix = metric.split("_", 1)[0]
    return prefix if prefix in SEGMENTS else None


def segment_returns(run: Run, segment: str) -> np.ndarray:
    """The run's per-bar strategy returns on one segment, from its full ``portfolio_values`` record (read
    from the run's artifact location directly: a ``runs:/`` URI would look the run up twice more)."""
    from runner.tracking.tables import read_backtest_table

    if segment == "oos":  # every row of the stitched record is out of sample
        returns = read_backtest_table(run.info.artifact_uri, "walk_forward")["strategy_return"].to_numpy(dtype=float)
    else:
        table = read_backtest_table(run.info.artifact_uri, "portfolio_values")
        returns = table.loc[table["segment"].astype(str) == segment, "strategy_return"].to_numpy(dtype=float)
    return returns[np.isfinite(returns)]


def sentence(dsr: float, n_trials: int, segment: str, pbo: float | None) -> str:
    """The line a researcher reads first."""
    if dsr >= 0.95:
        verdict = "is unlikely to be luck alone"
    elif dsr >= 0.5:
        verdict = "is weak evidence of an edge at best"
    else:
        verdict = "is what luck alone would often produce"
    text = f"deflated Sharpe {dsr:.2f}: across {n_trials} trials this {segment} Sharpe {verdict}"
    if pbo is not None:
        text += f"; PBO {pbo:.2f} (the in-sample best ranked in the bottom half out of sample in {pbo:.0%} of splits)"
    return text + "."


def _pbo(matrix_rows: list[np.ndarray]) -> tuple[float | None, str | None]:
    if len(matrix_rows) < 2:
        return None, "PBO needs at least 2 finished trials"
    if len({len(r) for r in matrix_rows}) != 1:
        return None, "PBO needs the trials' returns on the same bars (these trials ran on different data)"
    bars = len(matrix_rows[0])
    partitions = min(16, (bars // 2) // 2 * 2)
    if partitions < 2:
        return None, f"PBO needs at least 4 bars in the segment, it has {bars}"
    return probability_of_backtest_overfitting(np.column_stack(matrix_rows), partitions)[0], None


def trials_statistics(client: MlflowClient, metric: str, children: list[Run], members: list[Any],
                      winner_id: str) -> dict[str, Any]:
    """The trials statistics of a sweep's winner (see the module docstring), with the reasons for any left out."""
    segment = selection_segment(metric)
    stats: dict[str, Any] = {"n_trials": len(children), "segment": segment}
    if segment is None:
        stats["reason"] = f"{metric} names no segment (train/val/test), so there is no Sharpe to deflate"
        return stats
    finished = [r for r in members if r.info.status == "FINISHED"]
    returns = {r.info.run_id: segment_returns(r, segment) for r in finished}
    sharpes = [s for s in (moments(v)[0] for v in returns.values()) if math.isfinite(s)]
    sr_variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    sr, skew, kurtosis, n = moments(returns[winner_id])
    stats["trials_sharpe_variance"] = sr_variance
    if math.isfinite(sr):
        stats["deflated_sharpe_ratio"] = deflated_sharpe_ratio(sr, n, skew, kurtosis, len(children), sr_variance)
    else:
        stats["reason"] = f"the winner's {segment} returns have no variance: no Sharpe to deflate"
    stats["pbo"], why = _pbo(list(returns.values()))
    if why:
        stats["pbo_reason"] = why
    held_out = "oos" if segment == "oos" else "test"  # what no trial was fitted or selected on
    test = {name: [r.data.metrics.get(f"{held_out}_{name}", math.nan) for r in finished] for name in COMPARED}
    stats["median_test_metrics"] = {name: float(np.nanmedian(values)) if values else math.nan
                                    for name, values in test.items()}
    winner_test = next(r for r in finished if r.info.run_id == winner_id).data.metrics.get(f"{held_out}_sharpe_ratio")
    ordered = sorted((v for v in test["sharpe_ratio"] if math.isfinite(v)), reverse=True)
    stats["winner_test_rank"] = (ordered.index(winner_test) + 1) if winner_test in ordered else None
    if "deflated_sharpe_ratio" in stats:
        stats["sentence"] = sentence(stats["deflated_sharpe_ratio"], len(children), segment, stats["pbo"])
    return stats


def dsr_from_metrics(top: Any, trials: list[Run], metric: str) -> dict[str, Any]:
    """The deflated Sharpe of ``top`` given ``trials`` (runs in scope), from their logged metrics alone: the
    per-bar Sharpe is ``{seg}_sharpe_ratio / sqrt(backtest.periods_per_year)``."""
    segment = selection_segment(metric)
    if segment is None:
        return {"n_trials": len(trials), "reason": f"{metric} names no segment"}

    def per_bar(run: Run) -> float:
        params = run.data.params
        ppy = float(params.get("backtest.periods_per_year_used", params.get("backtest.periods_per_year", "nan")))
        return run.data.metrics.get(f"{segment}_sharpe_ratio", math.nan) / math.sqrt(ppy)

    metrics = top.data.metrics
    needed = [f"{segment}_{name}" for name in ("sharpe_ratio", "skew", "kurtosis", "num_bars")]
    if any(not math.isfinite(metrics.get(key, math.nan)) for key in needed) or not math.isfinite(per_bar(top)):
        return {"n_trials": len(trials), "reason": f"the top run lacks {segment} Sharpe moments (logged before "
                                                   "they existed, or undefined)"}
    sharpes = [s for s in map(per_bar, trials) if math.isfinite(s)]
    n_obs = int(metrics[f"{segment}_num_bars"]) - (1 if segment == "train" else 0)  # return periods
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    return {"n_trials": len(trials), "deflated_sharpe_ratio": deflated_sharpe_ratio(
        per_bar(top), n_obs, metrics[f"{segment}_skew"], metrics[f"{segment}_kurtosis"], len(trials), variance)}
