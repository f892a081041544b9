"""``python -m runner.report``: which run won, as a table or JSON; and stale-run clean-up.

    python -m runner.report [--experiment N] [--metric M] [--mode max|min] [--top K] [--sweep ID]
                            [--format table|json|csv] [--data D] [--strategy S] [--model M] [--digest D]
                            [--columns C1,C2] [--all-versions] [--tracking-uri U]
                            [--register NAME [--alias A] [--gate [--gate-dsr X] [--gate-pvalue P]]]
    python -m runner.report --ledger [--sweep NAME] [--format table|json]   # what n_trials counts
    python -m runner.report --stale [--older-than HOURS] [--mark]   # runs left RUNNING by a hard kill
    python -m runner.report --figures RUN_ID   # draw a sweep child's figures from its logged tables
    python -m runner.report --metrics   # what every metric means, and its unit

Only runs of the current engine version rank unless ``--all-versions`` (the count left out is shown);
``--register NAME`` puts the top run's whole strategy (raw bars in, weights out) in the model registry, ``--alias``
points an alias at it, and ``--gate`` registers nothing unless the run clears the gate (``registry.Gate``). Sweep
parent runs never rank. Runs on different data (another data digest) are said to mix data. Exit 2 with one clear
message when the experiment, sweep or metric does not exist, or the gate refuses.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from runner.engine import ENGINE_VERSION
from runner.errors import ConfigError, NotFoundError, UserError
from runner.tracking.registry import Gate

if TYPE_CHECKING:
    from runner.sweeps.ledger import Ledger
    from runner.tracking.logger import MLflowLogger

FORMATS = ("table", "json", "csv")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description="Best-run report.")
    parser.add_argument("--experiment", default="trading_experiment", help="experiment name")
    parser.add_argument("--metric", default="val_sharpe_ratio", help="metric to rank by")
    parser.add_argument("--mode", default="max", choices=["max", "min"])
    parser.add_argument("--top", type=int, default=10, help="how many runs to show")
    parser.add_argument("--sweep", help="only the children of this sweep (parent run id or sweep name)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="table (default), json or csv")
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.add_argument("--data", help="only runs on this data option (e.g. sp500)")
    parser.add_argument("--strategy", help="only runs of this strategy (e.g. momentum)")
    parser.add_argument("--model", help="only runs of this model option (e.g. mlp, none)")
    parser.add_argument("--digest", help="only runs on these bars: a data digest (the runs' data_digest tag)")
    parser.add_argument("--columns", help="comma-separated metrics, params or tags to show instead of the "
                                          "default columns, e.g. test_cagr,strategy.lookback (--metrics: what each "
                                          "metric means)")
    parser.add_argument("--metrics", action="store_true", help="print what every metric means, and its unit")
    parser.add_argument("--wide", action="store_true", help="every column, however wide (default: 100 characters)")
    parser.add_argument("--all-versions", action="store_true",
                        help="also rank runs of older engine versions (their metrics may mean something else)")
    parser.add_argument("--register", metavar="NAME",
                        help="register the top run's whole strategy as a new version of NAME in the model "
                             "registry")
    parser.add_argument("--alias", help="with --register: point this alias at the new version (e.g. champion)")
    parser.add_argument("--gate", action="store_true",
                        help="with --register: refuse (exit 2, nothing registered) unless the top run's deflated "
                             "Sharpe is at least --gate-dsr, its sweep's SPA p-value at most --gate-pvalue, and its "
                             "held-out metric beats NAME@ALIAS's on the same data")
    parser.add_argument("--gate-dsr", type=float, default=Gate.min_dsr, help="with --gate (default %(default)s)")
    parser.add_argument("--gate-pvalue", type=float, default=Gate.max_pvalue, help="with --gate (default %(default)s)")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else ./outputs/mlflow.db")
    parser.add_argument("--ledger", action="store_true",
                        help="list the trials in scope (each configuration on its data once, with the launches that "
                             "evaluated it): what n_trials counts")
    parser.add_argument("--figures", metavar="RUN_ID",
                        help="draw this run's figures from its logged tables and log them into it (a sweep's rule "
                             "children have none but its winner's)")
    parser.add_argument("--stale", action="store_true", help="list runs left RUNNING by a killed process")
    parser.add_argument("--older-than", type=float, default=None,
                        help="with --stale: also count RUNNING runs from other hosts older than this (hours)")
    parser.add_argument("--mark", action="store_true", help="with --stale: mark them KILLED (default: dry run)")
    args = parser.parse_args(argv)
    if args.json:
        args.format = "json"
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")
    if (args.alias or args.gate) and not args.register:
        parser.error("--alias and --gate apply to --register NAME; add it")
    return args


def open_experiment(name: str, tracking_uri: str | None) -> Any:
    from runner.tracking.logger import MLflowLogger

    return MLflowLogger.open_existing(name, tracking_uri)


def sweep_filter(logger: MLflowLogger, sweep: str, ledger: Ledger) -> str:
    """A filter for the runs of ``ledger``, the sweep name ``--sweep`` names, over all its launches: one run per
    configuration, a resumed job's by the run it points at."""
    from runner.tracking.queries import members_filter

    members = ledger.members()
    if not members:
        raise NotFoundError(f"--sweep {sweep!r}: no sweep with that parent run id or name, or it has no finished "
                            f"runs, in experiment {logger.experiment_name!r}.")
    return members_filter([r.info.run_id for r in members])


def stale_report(logger: MLflowLogger, older_than_hours: float | None, mark: bool, as_json: bool) -> int:
    """List (and with ``mark``, end KILLED) the runs left RUNNING by a process that is gone."""
    from runner.tracking.queries import find_stale, mark_killed

    found = find_stale(logger.client, logger.experiment_id, older_than_hours)
    if mark:
        mark_killed(logger.client, [run.info.run_id for run, _ in found], "marked KILLED by runner.report --stale")
    rows = [{"run_id": r.info.run_id, "run_name": r.info.run_name, "reason": why,
             "action": "marked KILLED" if mark else "dry run (add --mark)"} for r, why in found]
    if as_json:
        print(json.dumps({"stale_runs": rows}, indent=2))
    elif not rows:
        print("no stale runs")
    else:
        for row in rows:
            print(f"{row['run_id']}  {row['run_name']}  {row['reason']}  -> {row['action']}")
    return 0


def figures_report(logger: MLflowLogger, run_id: str) -> int:
    """``--figures RUN_ID``: the run's figures drawn from its logged tables, logged into it."""
    from mlflow.exceptions import MlflowException

    from runner.tracking.recorder import draw_logged_figures

    try:
        logger.client.get_run(run_id)
    except MlflowException:
        raise NotFoundError(f"--figures {run_id}: no such run in {logger.experiment_name!r}.") from None
    drawn = draw_logged_figures(logger.client, run_id)
    if not drawn:
        raise ConfigError(f"--figures {run_id}: only a rule's holdout run (model=none, evaluation=holdout) is drawn "
                          "from its tables; other runs draw their figures as they run.")
    print(f"logged {', '.join(drawn)} into run {run_id}")
    return 0


def report(args: argparse.Namespace) -> int:
    from runner.tracking.queries import (
        OLDER_COUNTED,
        and_filter,
        count_older,
        data_digests,
        older_count,
        search_ranked,
        version_filter,
    )
    from runner.views.report_table import WIDTH, format_table, rows_for, to_csv

    logger = open_experiment(args.experiment, args.tracking_uri)
    if args.figures:
        return figures_report(logger, args.figures)
    if args.stale:
        return stale_report(logger, args.older_than, args.mark, as_json=args.format == "json")
    from runner.sweeps.ledger import sweep_ledger

    swept = (sweep_ledger(logger.client, logger.experiment_id, sweep_name_of(logger, args.sweep)) if args.sweep
             else None)  # --sweep: every launch of its sweep name, read once for the filter and the trials
    scope = and_filter(sweep_filter(logger, args.sweep, swept) if swept else None,
                       *(f"tags.{key} = '{value}'" for key, value in (("data", args.data), ("strategy", args.strategy),
                                                                    ("model", args.model), ("data_digest", args.digest))
                         if value))
    if args.ledger:
        return ledger_report(args, scope_ledger(logger, scope, None, swept))
    filter_string = scope if args.all_versions else version_filter(scope)
    older = 0 if args.all_versions else count_older(logger.client, [logger.experiment_id], args.metric, scope)
    runs = search_ranked(logger.client, [logger.experiment_id], args.metric, args.mode, filter_string, args.top)
    if not runs:
        known = logger.client.search_runs([logger.experiment_id], max_results=1,
                                          filter_string=filter_string or "attributes.status = 'FINISHED'")
        available = sorted(known[0].data.metrics) if known else []
        hint = f"; metrics here include {', '.join(available[:8])}" if available else "; it has no finished runs"
        if older:
            hint += (f"; {older_count(older)} run(s) of older engine versions have it (python -m runner.report "
                     "--all-versions ranks them; the README's changelog says what changed)")
        version = "" if args.all_versions else f" of engine version {ENGINE_VERSION}"
        chosen = ", ".join(f"{k}={v}" for k, v in (("data", args.data), ("strategy", args.strategy),
                                                    ("model", args.model)) if v)
        raise NotFoundError(f"no finished run{version} in experiment {args.experiment!r}"
                          f"{' sweep ' + repr(args.sweep) if args.sweep else ''}{' with ' + chosen if chosen else ''}"
                          f" has a finite {args.metric!r}{hint}.")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    rows = rows_for(runs, args.metric, columns)
    belief = top_run_belief(scope_ledger(logger, scope, runs[0], swept), runs[0], args.metric, args.all_versions)
    rows[0]["deflated_sharpe_ratio"] = belief.get("deflated_sharpe_ratio")
    digests = data_digests(runs)
    registered = register(args, logger, runs[0], belief) if args.register else None
    if args.format == "csv":
        print(to_csv(rows, args.metric, columns), end="")
    elif args.format == "json":
        from runner.tracking.sanitize import to_jsonable

        print(json.dumps(to_jsonable({"experiment": args.experiment, "metric": args.metric, "mode": args.mode,
                                      "n_trials": belief["n_trials"], "trials_scope": belief["scope"],
                                      "engine_version": ENGINE_VERSION,
                                      "all_versions": args.all_versions, "older_runs_left_out": older,
                                      "older_runs_counted_to": OLDER_COUNTED,
                                      "data_digests": digests, "mixed_data": len(digests) > 1,
                                      "registered": registered, "runs": rows}), indent=2))
    else:
        width = None if args.wide else WIDTH
        say = functools.partial(print_wrapped, width=width)
        say(f"experiment {args.experiment!r}: top {len(rows)} by {args.mode} {args.metric} (winner first)")
        table, left_out = format_table(rows, args.metric, columns, width)
        print(table)
        if left_out:
            say(f"(left out to fit {WIDTH} columns: {', '.join(left_out)}; --wide shows them)")
        if older:
            say(f"left out {older_count(older)} finished run(s) of older engine versions (their metrics mean something "
                "else; --all-versions ranks them too)")
        if len(digests) > 1:
            say(f"these runs mix data: {len(digests)} data digests ({', '.join(digests)}); a metric compares runs "
                  "on the same bars only (--digest D keeps one)")
        if registered:
            say(f"registered run {registered['run_id']}'s strategy as version {registered['version']} of model "
                f"{registered['name']!r}" + (f", alias {registered['alias']!r}" if registered["alias"] else ""))
            print(f"  {registered['model_uri']}" + (f"  models:/{registered['name']}@{registered['alias']}"
                                                     if registered["alias"] else ""))
        where = (f"sweep name {args.sweep!r} over {belief['scope']['launches']} launch(es)" if args.sweep else
                 "the experiment on the top run's data (distinct configurations)")
        dsr = belief.get("deflated_sharpe_ratio")
        say(f"deflated Sharpe of the top run given the {belief['n_trials']} trials of {where}: "
              + (f"{dsr:.4f}" if dsr is not None else belief.get("reason", "n/a")))
    return 0


def print_wrapped(text: str, width: int | None) -> None:
    """A line of the report within ``width`` characters (None: as it is)."""
    import textwrap

    print(textwrap.fill(text, width, break_on_hyphens=False) if width else text)


def register(args: argparse.Namespace, logger: MLflowLogger, top: Any, belief: dict[str, Any]) -> dict[str, Any]:
    """``--register NAME [--alias A] [--gate]``: the top run's strategy as a new version, unless the gate refuses."""
    from runner.serving.packaging import log_strategy_model
    from runner.tracking.registry import check_name, gate_refusal, refuse_twice, register_model

    check_name(args.register, args.alias)
    if args.gate:
        why = gate_refusal(logger.client, top, args.register, args.alias or "champion", args.metric, args.mode,
                           belief, Gate(args.gate_dsr, args.gate_pvalue))
        if why:
            raise ConfigError(f"--gate: run {top.info.run_id} not registered: {why}.")
    refuse_twice(logger.client, top, args.register)
    model_id = log_strategy_model(logger.client, logger.tracking_uri, top)
    version = register_model(logger.client, logger.tracking_uri, top, model_id, args.register, args.metric,
                             belief.get("deflated_sharpe_ratio"), args.alias)
    return {"name": version.name, "version": int(version.version), "run_id": top.info.run_id,
            "alias": args.alias, "model_uri": f"models:/{version.name}/{version.version}"}


def scope_ledger(logger: MLflowLogger, scope: str | None, top: Any | None, swept: Ledger | None) -> Ledger:
    """The trials in scope (``runner.sweeps.ledger``): ``swept``, the ledger of ``--sweep``'s sweep name, else the
    experiment's distinct configurations (within the filters) on the top run's data."""
    from runner.sweeps.ledger import experiment_ledger
    from runner.tracking.queries import DATA_DIGEST_TAG

    if swept is not None:
        return swept
    digest = top.data.tags.get(DATA_DIGEST_TAG) if top is not None else None
    return experiment_ledger(logger.client, logger.experiment_id, scope, digest)


def sweep_name_of(logger: MLflowLogger, sweep: str) -> str:
    """``--sweep`` as a sweep name (it may be given as a parent run id)."""
    from mlflow.exceptions import MlflowException

    try:
        return logger.client.get_run(sweep).data.tags.get("sweep_name", sweep)
    except MlflowException:
        return sweep


def top_run_belief(ledger: Ledger, top: Any, metric: str, all_versions: bool = False) -> dict[str, Any]:
    """The top run's deflated Sharpe given the trials in scope: one finished run per configuration (of this
    engine version unless ``all_versions``), N counting every configuration (failed ones included), never pointer
    runs or repeats."""
    from runner.sweeps.trials import dsr_from_metrics

    members = ledger.members(None if all_versions else str(ENGINE_VERSION))
    belief = dsr_from_metrics(top, members, metric, ledger.n_trials)
    belief["scope"] = ledger.scope
    return belief


def ledger_report(args: argparse.Namespace, ledger: Ledger) -> int:
    """``--ledger``: every trial in scope, with the runs and launches that evaluated it."""
    rows = ledger.table()
    if args.format == "json":
        from runner.tracking.sanitize import to_jsonable

        print(json.dumps(to_jsonable({"experiment": args.experiment, "scope": ledger.scope,
                                      "n_trials": ledger.n_trials, "trials": rows}), indent=2))
        return 0
    print(f"experiment {args.experiment!r}: {ledger.n_trials} trials (distinct configuration x data)"
          + (f" of sweep name {args.sweep!r} over {ledger.scope['launches']} launch(es)" if args.sweep else ""))
    print(f"{'config_hash':<18}{'data_digest':<18}{'runs':>5}{'finished':>9}  launches")
    for row in rows:
        print(f"{row['config_hash']:<18}{row['data_digest'] or '-':<18}{row['evaluations']:>5}{row['finished']:>9}  "
              + ", ".join(row["launches"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.metrics:
        from runner.engine.metric_docs import render_text

        print(render_text(), end="")
        return 0
    try:
        return report(args)
    except BrokenPipeError:  # the reader stopped reading (| head): not an error; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
