"""``python -m runner.report``: which run won, as a table or JSON; and stale-run clean-up.

    python -m runner.report [--experiment N] [--metric M] [--mode max|min] [--top K] [--sweep ID]
                            [--json] [--tracking-uri U]
    python -m runner.report --stale [--older-than HOURS] [--mark]   # runs left RUNNING by a hard kill

Sweep parent runs never rank (they log no metrics). Exit 2 with one clear message when the experiment,
sweep or metric does not exist.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

SHOWN_METRICS = ("sharpe_ratio", "total_return", "max_drawdown")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description="Best-run report.")
    parser.add_argument("--experiment", default="trading_experiment", help="experiment name")
    parser.add_argument("--metric", default="val_sharpe_ratio", help="metric to rank by")
    parser.add_argument("--mode", default="max", choices=["max", "min"])
    parser.add_argument("--top", type=int, default=10, help="how many runs to show")
    parser.add_argument("--sweep", help="only the children of this sweep (parent run id or sweep name)")
    parser.add_argument("--json", action="store_true", help="print only JSON on stdout")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else ./outputs/mlflow.db")
    parser.add_argument("--stale", action="store_true", help="list runs left RUNNING by a killed process")
    parser.add_argument("--older-than", type=float, default=None,
                        help="with --stale: also count RUNNING runs from other hosts older than this (hours)")
    parser.add_argument("--mark", action="store_true", help="with --stale: mark them KILLED (default: dry run)")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    return args


def open_experiment(name: str, tracking_uri: str | None) -> Any:
    from runner.logger import MLflowLogger

    return MLflowLogger.open_existing(name, tracking_uri)


def sweep_filter(logger: Any, sweep: str) -> str:
    """A filter for the runs of one sweep (by parent run id or sweep name), resumed jobs included."""
    from runner.sweep_report import members_filter, sweep_children, sweep_members

    by_name = f"tags.sweep_name = '{sweep}' and tags.`runner.role` = 'sweep_parent'"
    runs = logger.client.search_runs([logger.experiment_id], max_results=1, filter_string=by_name)
    members = sweep_members(logger, sweep_children(logger, runs[0].info.run_id if runs else sweep))
    if not members:
        raise LookupError(f"--sweep {sweep!r}: no sweep with that parent run id or name, or it has no runs, in "
                          f"experiment {logger.experiment_name!r}.")
    return members_filter(members)


def rows_for(runs: list[Any], metric: str) -> list[dict[str, Any]]:
    from runner.sweep_report import differing_params

    keys = differing_params(runs)[:6] if len(runs) > 1 else []
    suffix = metric.split("_", 1)[1] if metric.startswith(("train_", "val_", "test_")) else None
    rows = []
    for rank, run in enumerate(runs, 1):
        metrics = run.data.metrics
        row = {"rank": rank, "run_id": run.info.run_id, "run_name": run.info.run_name, metric: metrics.get(metric),
               "params": {k: run.data.params.get(k) for k in keys}}
        for segment in ("val", "test"):
            for name in ({suffix} if suffix else set()) | set(SHOWN_METRICS):
                row[f"{segment}_{name}"] = metrics.get(f"{segment}_{name}")
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    metric_columns = [metric] + sorted({k for r in rows for k in r if k.startswith(("val_", "test_")) and k != metric})
    param_keys = list(rows[0]["params"]) if rows else []
    header = ["#", "run id", "run name", *metric_columns, *param_keys]
    lines = []
    for row in rows:
        cells = [str(row["rank"]), row["run_id"][:12], str(row["run_name"])]
        cells += ["nan" if row.get(c) is None or not math.isfinite(row[c]) else f"{row[c]:.4f}" for c in metric_columns]
        cells += [str(row["params"].get(k)) for k in param_keys]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) for cells in lines]
    return "\n".join(out)


def report(args: argparse.Namespace) -> int:
    from runner.best_run import search_ranked

    logger = open_experiment(args.experiment, args.tracking_uri)
    if args.stale:
        from runner.stale import stale_runs

        return stale_runs(logger, args.older_than, args.mark, as_json=args.json)
    filter_string = sweep_filter(logger, args.sweep) if args.sweep else None
    runs = search_ranked(logger.client, [logger.experiment_id], args.metric, args.mode, filter_string, args.top)
    if not runs:
        known = logger.client.search_runs([logger.experiment_id], max_results=1,
                                          filter_string=filter_string or "attributes.status = 'FINISHED'")
        available = sorted(known[0].data.metrics) if known else []
        hint = f"; metrics here include {', '.join(available[:8])}" if available else "; it has no finished runs"
        raise LookupError(f"no finished run in experiment {args.experiment!r}"
                          f"{' sweep ' + repr(args.sweep) if args.sweep else ''} has a finite {args.metric!r}{hint}.")
    rows = rows_for(runs, args.metric)
    if args.json:
        from runner.params import to_jsonable

        print(json.dumps(to_jsonable({"experiment": args.experiment, "metric": args.metric, "mode": args.mode,
                                      "runs": rows}), indent=2))
    else:
        print(f"experiment {args.experiment!r}: top {len(rows)} by {args.mode} {args.metric} (winner first)")
        print(format_table(rows, args.metric))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return report(args)
    except (ValueError, TypeError, LookupError) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
