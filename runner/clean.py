"""``python -m runner.clean``: list, and with ``--yes`` delete, runs by status, age or engine version, their
artifacts and logged models (purged the way ``mlflow gc`` does), and orphaned artifact folders.

    python -m runner.clean --status FAILED,KILLED                 # dry run: what would go, and the disk it frees
    python -m runner.clean --older-than 30d --before-version 2 --yes
    python -m runner.clean --tracking-uri http://host:5000 --backend-store-uri postgresql://... --status FAILED --yes

Criteria combine (a run must match all given). Never a RUNNING run, never the run of a registered model
version, never a sweep parent (or a resumed job's earlier run) that a run which stays still points at.
Without a criterion only orphaned folders (no run in the store) are listed. Exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, NotFoundError, UserError

if TYPE_CHECKING:
    from mlflow.entities import Run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runner.clean", description="Delete runs and free their disk.")
    parser.add_argument("--status", help="comma-separated: FINISHED, FAILED, KILLED (e.g. FAILED,KILLED)")
    parser.add_argument("--older-than", help="runs started longer ago than this: 30d, 12h, 1d12h")
    parser.add_argument("--before-version", type=int, help="runs of engine versions below N (untagged runs are 1)")
    parser.add_argument("--experiment", action="append", help="only this experiment (repeatable; default: all)")
    parser.add_argument("--yes", action="store_true", help="delete (default: list only)")
    parser.add_argument("--json", action="store_true", help="print only JSON on stdout")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else ./outputs/mlflow.db")
    parser.add_argument("--backend-store-uri", help="a server's own database (what `mlflow gc` purges); "
                                                    "needed with --yes on a server")
    return parser.parse_args(argv)


def megabytes(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 1e6:.2f} MB"


def _row(run: Run, size: int | None) -> dict[str, Any]:
    from runner.tracking.queries import engine_version

    started = dt.datetime.fromtimestamp((run.info.start_time or 0) / 1000).isoformat(timespec="seconds")
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "engine_version": engine_version(run), "started": started, "bytes": size}


def clean(args: argparse.Namespace) -> dict[str, Any]:
    from mlflow import MlflowClient

    from runner.tracking.cleanup import folder_bytes, parse_age, parse_statuses, plan_cleanup, purge
    from runner.tracking.sanitize import redact_uri
    from runner.tracking.store import resolve_tracking_uri, sqlite_path, store_lock

    statuses = parse_statuses(args.status) if args.status else None
    older_than = parse_age(args.older_than) if args.older_than else None
    if args.before_version is not None and args.before_version < 2:
        raise ConfigError(f"--before-version {args.before_version}: engine versions start at 1, so give N >= 2.")
    uri = resolve_tracking_uri(args.tracking_uri)
    db_path = sqlite_path(uri)
    if db_path is not None and not db_path.is_file():
        raise NotFoundError(f"no MLflow store at {uri}: pass --tracking-uri.")
    backend = args.backend_store_uri or (uri if db_path is not None else None)
    if args.yes and backend is None:
        raise ConfigError(f"--yes on the server {redact_uri(uri)} needs --backend-store-uri (the server's database, "
                         "as `mlflow gc` needs it) to purge the runs' rows.")
    with store_lock(uri):  # a run may be creating this store's schema now: wait for it, never race it
        client = MlflowClient(uri)
        experiments = client.search_experiments(max_results=50000)
    if args.experiment:
        known = {e.name: e for e in experiments}
        missing = [name for name in args.experiment if name not in known]
        if missing:
            raise NotFoundError(f"--experiment {missing[0]!r} is not in {redact_uri(uri)}; experiments: "
                              f"{', '.join(sorted(known))}.")
        experiments = [known[name] for name in args.experiment]
    plan = plan_cleanup(client, experiments, statuses, older_than, args.before_version)
    report = {"tracking_uri": redact_uri(uri), "deleted": args.yes,
              "runs": [_row(r, plan.sizes[r.info.run_id]) for r in plan.runs],
              "kept": [{"run_id": r.info.run_id, "run_name": r.info.run_name, "why": why} for r, why in plan.kept],
              "orphaned_folders": [{"path": str(p), "bytes": plan.sizes[str(p)]} for p in plan.orphans],
              "bytes": plan.total_bytes}
    if args.yes and (plan.runs or plan.orphans):
        before = folder_bytes(db_path.parent) if db_path is not None else None
        purge(client, plan, backend, uri)
        after = folder_bytes(db_path.parent) if db_path is not None else None
        report["bytes_freed_on_disk"] = None if before is None or after is None else before - after
    return report


def print_report(report: dict[str, Any]) -> None:
    verb = "deleted" if report["deleted"] else "would delete"
    for row in report["runs"]:
        print(f"{verb}: run {row['run_id']}  {row['run_name']:<28} {row['status']:<9} v{row['engine_version']}  "
              f"{row['started']}  {megabytes(row['bytes'])}")
    for row in report["kept"]:
        print(f"kept: run {row['run_id']}  {row['run_name']}  {row['why']}")
    for row in report["orphaned_folders"]:
        print(f"{verb}: orphaned folder {row['path']}  {megabytes(row['bytes'])} (no run in the store owns it)")
    total = f"{len(report['runs'])} run(s) and {len(report['orphaned_folders'])} orphaned folder(s), " \
            f"{megabytes(report['bytes'])} of artifacts"
    if report["deleted"]:
        freed = report.get("bytes_freed_on_disk")
        print(f"deleted {total}" + (f"; {megabytes(freed)} freed on disk (database included)" if freed is not None
                                    else ""))
    else:
        print(f"would delete {total}; nothing changed: add --yes to delete")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = clean(args)
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
