"""Queries on an MLflow store: the best runs (fast on large experiments), a sweep's runs, stale runs.

Ranking by a metric takes one of two routes, by the store's database (``ranks_in_store``):
- sqlite: not ``search_runs(order_by=[metric])``. MLflow binds LIMIT as a parameter, and sqlite then plans the
  metric ordering join as a nested loop (no automatic index), quadratic in the number of runs (``bench/best_run.py``;
  the best of 10,000 runs: 3.5 s). Filtering on a metric bound needs no such join, so we narrow with
  ``metrics.m >= bound`` (a supported filter) until the candidates are few (0.2 s at 10,000).
- PostgreSQL: MLflow's ``order_by``, one sort in the database (the top 10 of 100,000 runs: 0.6-0.7 s, 1.6-1.7 s
  where PostgreSQL runs the prepared search with a generic plan: the README's tuning; ``bench/store_scale.py``).
  There the narrowing's last rounds cost a walk over every run each (a filter that matches few runs: PostgreSQL
  walks the runs in start-time order testing each): 5.5-6.6 s.
A client cannot see a tracking server's database (MLflow's ``server-info`` says ``SqlStore`` for both), so for an
``http(s)`` URI ``RUNNER_SERVER_DATABASE`` names it; unset, the narrowing runs, which is never slow on either.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.config.schema import MODES
from runner.engine import ENGINE_VERSION
from runner.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

ENGINE_VERSION_TAG = "runner.engine_version"
DATA_DIGEST_TAG = "data_digest"  # the digest of a run's bars: with its config hash, its trial's identity

# MLflow keeps +/-inf as +/-1.7976931348623157e308; the search grammar has no exponent notation,
# so the bound is written out in full. A stored inf equals the bound and fails the strict comparison.
MLFLOW_INF = 1.7976931348623157e308
_FLOAT_BOUND_LITERAL = str(int(MLFLOW_INF))
_METRIC_NAME = re.compile(r"^[\w.\-/ :]+$")
PROBE_RUNS = 25
SERVER_DATABASE_ENV = "RUNNER_SERVER_DATABASE"
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQL stores
ORDERS_IN_STORE = ("postgresql",)  # measured; MySQL and SQL Server are not (the narrowing is right on any)
OLDER_COUNTED = 25  # where count_older stops: every run it counts is read whole (3-7 ms a run of ours, measured)


def _literal(value: float) -> str:
    """A float as an exact decimal literal (MLflow's filter grammar rejects ``1e-05``)."""
    return format(Decimal(value), "f")


def validate_query(metric_name: str, mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"mode {mode!r} is not valid: use one of {', '.join(MODES)}.")
    if not isinstance(metric_name, str) or not _METRIC_NAME.match(metric_name) or "`" in metric_name:
        raise ConfigError(
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


def and_filter(*clauses: str | None) -> str | None:
    """The clauses joined with ``and`` (empty ones dropped), or None when none is left."""
    kept = [c.strip() for c in clauses if c and c.strip()]
    return " and ".join(kept) or None


def version_filter(filter_string: str | None = None, version: int = ENGINE_VERSION) -> str:
    """``filter_string`` narrowed to the runs of one engine version (runs without the tag are older)."""
    return and_filter(filter_string, f"tags.`{ENGINE_VERSION_TAG}` = '{version}'") or ""


def count_older(client: MlflowClient, experiment_ids: list[str], metric_name: str,
                filter_string: str | None = None, cap: int = OLDER_COUNTED, version: int = ENGINE_VERSION) -> int:
    """Finished runs with a finite ``metric_name`` logged by an engine version below ``version`` (or before the tag
    existed), counted up to ``cap``: a count of ``cap`` means that many or more (``older_count``). MLflow has no
    count query, and a search reads each run it returns whole: counted to the end, 4,545 such runs took 39 s over
    a server. Each older version is asked for by equality, which a database answers from the tag's rows; a
    ``!=`` filter made PostgreSQL walk every run of the experiment (2.1-2.4 s at 100,000 runs, against 0.17-0.22
    s for ``= '1'``), and counted runs of a newer engine as older. Runs of a newer version (a newer checkout's) are
    left out of a ranking and not counted: this version cannot say what their metrics mean."""
    base = finite_filter(metric_name, filter_string)
    counted = 0
    for clause in ("IS NULL", *(f"= '{older}'" for older in range(version - 1, 0, -1))):
        if counted < cap:
            counted += len(client.search_runs(experiment_ids, f"{base} and tags.`{ENGINE_VERSION_TAG}` {clause}",
                                              max_results=cap - counted))
    return counted


def older_count(counted: int) -> str:
    """``count_older``'s count as a user reads it: ``25+`` where the count stopped at its cap."""
    return f"{counted}+" if counted >= OLDER_COUNTED else str(counted)


def engine_version(run: Run) -> int:
    """The engine version a run was logged with (1: before the tag existed)."""
    text = run.data.tags.get(ENGINE_VERSION_TAG, "1")
    return int(text) if text.isdigit() else 1


def run_to_dict(run: Run) -> dict[str, Any]:
    return {"run_id": run.info.run_id, "metrics": dict(run.data.metrics), "params": dict(run.data.params)}


def _value(run: Run, metric_name: str) -> float:
    return float(run.data.metrics.get(metric_name, math.nan))


def _rank(runs: list[Run], metric_name: str, mode: str) -> list[Any]:
    """Best first; ties go to the most recently started run, then run id (MLflow's own secondary order)."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(runs, key=lambda r: (sign * _value(r, metric_name), -(r.info.start_time or 0), r.info.run_id))


def _finite(run: Run, metric_name: str) -> bool:
    value = _value(run, metric_name)
    return math.isfinite(value) and abs(value) < MLFLOW_INF


def ranked(runs: list[Run], metric_name: str, mode: str = "max") -> list[Any]:
    """``runs`` read already, those with a finite metric best first: the order ``search_ranked`` gives them."""
    validate_query(metric_name, mode)
    return _rank([r for r in runs if _finite(r, metric_name)], metric_name, mode)


def store_database(tracking_uri: str) -> str | None:
    """The database behind a tracking URI: its scheme for a database URI (``postgresql+psycopg://`` ->
    ``postgresql``), ``RUNNER_SERVER_DATABASE`` for a tracking server (None when unset), else None."""
    from urllib.parse import urlparse

    scheme = urlparse(str(tracking_uri)).scheme.split("+")[0].lower()
    if scheme in DATABASES:
        return scheme
    named = os.environ.get(SERVER_DATABASE_ENV, "").strip().lower()
    if scheme not in ("http", "https") or not named:
        return None
    if named not in DATABASES:
        raise ConfigError(f"{SERVER_DATABASE_ENV}={named!r} is not valid: the tracking server's database, one of "
                          f"{', '.join(DATABASES)}.")
    return named


def ranks_in_store(client: MlflowClient) -> bool:
    """Whether to rank with MLflow's ``order_by`` (the store's database sorts fast) rather than by narrowing."""
    return store_database(client.tracking_uri) in ORDERS_IN_STORE


def search_ranked(client: MlflowClient, experiment_ids: list[str], metric_name: str, mode: str = "max",
                  filter_string: str | None = None, max_results: int = 1, in_store: bool | None = None) -> list[Any]:
    """The top ``max_results`` finished runs by a finite metric, best first (MLflow ``Run`` objects), the same
    runs in the same order by either route (``in_store``: MLflow's ``order_by``; None: ``ranks_in_store``).

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
        narrowing = not (ranks_in_store(client) if in_store is None else in_store)
        while narrowing:
            narrowed = base if bound is None else f"{base} and metrics.`{metric_name}` {comparator} {_literal(bound)}"
            runs = list(client.search_runs(experiment_ids, filter_string=narrowed, max_results=probe))
            best = ranked(runs, metric_name, mode)
            if len(runs) < probe:
                return best[:max_results]
            new_bound = _value(best[max_results - 1], metric_name) if len(best) >= max_results else None
            if new_bound is None or new_bound == bound:  # ties or non-finite values crowd the probe
                break
            bound = new_bound
        # the store orders: in store, or where the narrowing cannot (ties: MLflow orders as _rank does)
        return list(client.search_runs(experiment_ids, order_by=order, max_results=max_results,
                                       filter_string=finite_filter(metric_name, filter_string)))
    except MlflowException as error:
        raise ConfigError(f"invalid run filter {filter_string!r}: {error.message}") from None


def best_run(client: MlflowClient, experiment_ids: list[str], metric_name: str, mode: str = "max",
             filter_string: str | None = None, all_versions: bool = False, in_store: bool | None = None,
             ) -> dict[str, Any] | None:
    """``{"run_id", "metrics", "params", "older_runs_left_out", "data_digest", "mixed_data"}`` of the best finished
    run, or None when no run has the metric. Only runs of the current engine version compete unless
    ``all_versions``; the count says how many finished runs of older versions with a finite metric were left out (0
    with ``all_versions``; ``OLDER_COUNTED`` means that many or more). ``mixed_data``: a run in scope ran on other
    bars (another data digest), so the best value may be best for its data only. ``in_store``: as for
    ``search_ranked``."""
    scope = filter_string if all_versions else version_filter(filter_string)
    runs = search_ranked(client, experiment_ids, metric_name, mode, scope, max_results=1, in_store=in_store)
    if not runs:
        return None
    older = 0 if all_versions else count_older(client, experiment_ids, metric_name, filter_string)
    digest = runs[0].data.tags.get(DATA_DIGEST_TAG)
    other = client.search_runs(experiment_ids, and_filter(scope, "attributes.status = 'FINISHED'",
                                                          f"tags.{DATA_DIGEST_TAG} != '{digest}'"),
                               max_results=1) if digest else []
    return {**run_to_dict(runs[0]), "older_runs_left_out": older, "data_digest": digest, "mixed_data": bool(other)}


def data_digests(runs: list[Run]) -> list[str]:
    """The distinct data digests of ``runs`` (``-`` for a run logged before digests existed), in their order."""
    return list(dict.fromkeys(run.data.tags.get(DATA_DIGEST_TAG, "-") for run in runs))


def members_filter(run_ids: list[str]) -> str:
    return "attributes.run_id IN ({})".format(", ".join(f"'{run_id}'" for run_id in run_ids))


def differing_params(runs: list[Run]) -> list[str]:
    """Param keys whose values are not the same across the runs that logged them (what the sweep varied)."""
    keys = sorted({k for r in runs for k in r.data.params})
    return [k for k in keys if len({r.data.params[k] for r in runs if k in r.data.params}) > 1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_stale(client: MlflowClient, experiment_id: str, older_than_hours: float | None = None) -> list[tuple[Any,
               str]]:
    """RUNNING runs whose process is gone: started on this host by a pid that no longer exists (tags
    ``runner.host``/``runner.pid``, sweep parents included), or, with ``older_than_hours``, started longer ago."""
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000)
    now_ms = time.time() * 1000
    stale = []
    for run in runs:
        if process_gone(run):
            stale.append((run, f"process {run.data.tags['runner.pid']} on this host is gone"))
        elif older_than_hours is not None and now_ms - run.info.start_time > older_than_hours * 3.6e6:
            stale.append((run, f"RUNNING for more than {older_than_hours} h"))
    return stale


def process_gone(run: Run) -> bool:
    """Whether a RUNNING run's process is known to be gone: started on this host by a pid that no longer exists."""
    tags = run.data.tags
    pid = tags.get("runner.pid")
    return tags.get("runner.host") == socket.gethostname() and bool(pid) and pid.isdigit() and not _alive(int(pid))


def running_sweep_parents(client: MlflowClient, experiment_id: str, sweep_name: str) -> list[Run]:
    """The parents of ``sweep_name`` still RUNNING with a live process (a stale one, ``process_gone``, is not)."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`runner.role` = 'sweep_parent' and tags.sweep_name = '{sweep_name}' and attributes.status = 'RUNNING'"))
    return [run for run in runs if not process_gone(run)]


def mark_killed(client: MlflowClient, run_ids: list[str], reason: str) -> None:
    for run_id in run_ids:
        client.set_terminated(run_id, "KILLED")
        client.set_tag(run_id, "error", reason)
