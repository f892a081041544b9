"""Best-run queries on an MLflow tracking store, fast on large experiments.

Why not just ``search_runs(order_by=[metric], max_results=1)``: on the sqlite store MLflow binds LIMIT
as a parameter, and sqlite then plans the metric join as a nested loop (no automatic index), which is
quadratic in the number of runs (8-10 s at 10k runs). We narrow the query first with a metric filter
the store can index: the best value among a few recent runs is a lower bound (for ``max``) that the
true winner must reach, so ``metrics.m >= bound`` keeps the answer and leaves only a small tail of
candidates to order. If the narrowed query comes back empty (a run deleted in between), the plain
query answers.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

MODES = ("max", "min")
# MLflow keeps +/-inf as +/-1.7976931348623157e308; the search grammar has no exponent notation,
# so the bound is written out in full. A stored inf equals the bound and fails the strict comparison.
_FLOAT_BOUND_LITERAL = str(int(1.7976931348623157e308))
_METRIC_NAME = re.compile(r"^[\w.\-/ :]+$")
PROBE_RUNS = 50


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


def search_ranked(client: Any, experiment_ids: list[str], metric_name: str, mode: str = "max",
                  filter_string: str | None = None, max_results: int = 1) -> list[Any]:
    """The top ``max_results`` finished runs by a finite metric, best first (MLflow ``Run`` objects)."""
    from mlflow.exceptions import MlflowException

    validate_query(metric_name, mode)
    base = finite_filter(metric_name, filter_string)
    order = [f"metrics.`{metric_name}` {'DESC' if mode == 'max' else 'ASC'}"]
    try:
        probe = client.search_runs(experiment_ids, filter_string=base, max_results=PROBE_RUNS)
        values = [r.data.metrics[metric_name] for r in probe if metric_name in r.data.metrics]
        values = [v for v in values if math.isfinite(v)]
        if len(values) >= max_results:
            # The max_results-th best among the probe is reached by at least max_results runs.
            bound = sorted(values, reverse=(mode == "max"))[max_results - 1]
            comparator = ">=" if mode == "max" else "<="
            narrowed = f"{base} and metrics.`{metric_name}` {comparator} {_literal(bound)}"
            runs = client.search_runs(experiment_ids, filter_string=narrowed, order_by=order,
                                      max_results=max_results)
            if len(runs) >= max_results:
                return list(runs)
        return list(client.search_runs(experiment_ids, filter_string=base, order_by=order,
                                       max_results=max_results))
    except MlflowException as error:
        raise ValueError(f"invalid run filter {filter_string!r}: {error.message}") from None


def best_run(client: Any, experiment_ids: list[str], metric_name: str, mode: str = "max",
             filter_string: str | None = None) -> dict[str, Any] | None:
    """``{"run_id", "metrics", "params"}`` of the best finished run, or None when no run has the metric."""
    runs = search_ranked(client, experiment_ids, metric_name, mode, filter_string, max_results=1)
    return run_to_dict(runs[0]) if runs else None
