"""Best-run queries on an MLflow tracking store, fast on large experiments.

Why not just ``search_runs(order_by=[metric], max_results=1)``: on the sqlite store MLflow binds LIMIT
as a parameter, and sqlite then plans the metric ordering join as a nested loop (no automatic index),
quadratic in the number of runs (~14 s at 10k runs here). Filtering on a metric bound needs no such
join, so we narrow with ``metrics.m >= bound`` (a supported filter) until the candidates are few.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

MODES = ("max", "min")
# MLflow keeps +/-inf as +/-1.7976931348623157e308; the search grammar has no exponent notation,
# so the bound is written out in full. A stored inf equals the bound and fails the strict comparison.
MLFLOW_INF = 1.7976931348623157e308
_FLOAT_BOUND_LITERAL = str(int(MLFLOW_INF))
_METRIC_NAME = re.compile(r"^[\w.\-/ :]+$")
PROBE_RUNS = 25


def _literal(value: float) -> str:
    """A float as an exact decimal literal (MLflow's filter grammar rejects ``1e-05``)."""
    return format(Decimal(value), "f")


def validate_query(metric_name: str, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not valid: use one of {', '.join(MODES)}.")
    if not isinstance(metric_name, str) or not _METRIC_NAME.match(metric_name) or "`" in metric_name:
        raise ValueError(
            f"metric name {metric_name!r} is not a valid MLflow metric key "
            "(letters, digits, '_', '-', '.', '/', ' ', ':'), e.g. 'val_sharpe_ratio'."
        )


def finite_filter(metric_name: str, filter_string: str | None = None) -> str:
    """Finished runs whose metric is finite (NaN never satisfies a comparison in MLflow's store)."""
    key = f"metrics.`{metric_name}`"
    clauses = ["attributes.status = 'FINISHED'", f"{key} < {_FLOAT_BOUND_LITERAL}",
               f"{key} > -{_FLOAT_BOUND_LITERAL}"]
    if filter_string and filter_string.strip():
        clauses.append(filter_string.strip())
    return " and ".join(clauses)


def run_to_dict(run: Any) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "metrics": dict(run.data.metrics), "params": dict(run.data.params)}


def _value(run: Any, metric_name: str) -> float:
    return float(run.data.metrics.get(metric_name, math.nan))


def _rank(runs: list[Any], metric_name: str, mode: str) -> list[Any]:
    """Best first; ties go to the most recently started run, then run id (MLflow's own secondary order)."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(runs, key=lambda r: (sign * _value(r, metric_name), -(r.info.start_time or 0), r.info.run_id))


def _finite(run: Any, metric_name: str) -> bool:
    value = _value(run, metric_name)
    return math.isfinite(value) and abs(value) < MLFLOW_INF


def search_ranked(client: Any, experiment_ids: list[str], metric_name: str, mode: str = "max",
                  filter_string: str | None = None, max_results: int = 1) -> list[Any]:
    """The top ``max_results`` finished runs by a finite metric, best first (MLflow ``Run`` objects).

    Narrowing loop: fetch up to PROBE_RUNS matching runs (no metric ordering, so sqlite's plan stays
    linear), raise the bound to the max_results-th best finite value seen, and repeat until fewer than
    PROBE_RUNS runs match: those are all the candidates, ranked here. Each round keeps every run that can
    still be in the top ``max_results``, and the candidates shrink ~PROBE_RUNS-fold per round. Non-finite
    values (NaN, MLflow's stored +/-inf) are dropped here; where they crowd the probe, the store orders.
    """
    from mlflow.exceptions import MlflowException

    validate_query(metric_name, mode)
    base = "attributes.status = 'FINISHED'" + (f" and {filter_string.strip()}" if filter_string and
                                                 filter_string.strip() else "")
    comparator = ">=" if mode == "max" else "<="
    order = [f"metrics.`{metric_name}` {'DESC' if mode == 'max' else 'ASC'}"]
    probe = max(PROBE_RUNS, 2 * max_results)
    bound: float | None = None
    try:
        while True:
            narrowed = base if bound is None else f"{base} and metrics.`{metric_name}` {comparator} {_literal(bound)}"
            runs = list(client.search_runs(experiment_ids, filter_string=narrowed, max_results=probe))
            ranked = _rank([r for r in runs if _finite(r, metric_name)], metric_name, mode)
            if len(runs) < probe:
                return ranked[:max_results]
            new_bound = _value(ranked[max_results - 1], metric_name) if len(ranked) >= max_results else None
            if new_bound is None or new_bound == bound:  # ties or non-finite values crowd the probe
                return list(client.search_runs(experiment_ids, order_by=order, max_results=max_results,
                                               filter_string=finite_filter(metric_name, filter_string)))
            bound = new_bound
    except MlflowException as error:
        raise ValueError(f"invalid run filter {filter_string!r}: {error.message}") from None


def best_run(client: Any, experiment_ids: list[str], metric_name: str, mode: str = "max",
             filter_string: str | None = None) -> dict[str, Any] | None:
    """``{"run_id", "metrics", "params"}`` of the best finished run, or None when no run has the metric."""
    runs = search_ranked(client, experiment_ids, metric_name, mode, filter_string, max_results=1)
    return run_to_dict(runs[0]) if runs else None
