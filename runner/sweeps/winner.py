"""The end of a sweep: read every child back from MLflow, pick the winner, print, save and tag it."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.tracking.lifecycle import LOST_TAG
from runner.tracking.queries import data_digests, differing_params, ranked, run_to_dict
from runner.tracking.sanitize import to_jsonable

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow.entities import Run

    from runner.sweeps.bootstrap_worker import BootstrapWorker
    from runner.tracking.logger import MLflowLogger

SHOWN_METRICS = ("sharpe_ratio", "total_return", "max_drawdown", "num_trades")


def segment_metrics(metrics: dict[str, float], segment: str) -> dict[str, float]:
    """One segment's metrics by name; a CPCV run's "segment" is its paths: each metric's mean over them
    (``cpcv_{name}_mean``)."""
    if segment == "cpcv":
        return {k[5:-5]: v for k, v in sorted(metrics.items()) if k.startswith("cpcv_") and k.endswith("_mean")}
    return {k[len(segment) + 1:]: v for k, v in sorted(metrics.items()) if k.startswith(f"{segment}_")}


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def sweep_figure(runs: list[Run], metric: str, keys: list[str]) -> Figure:
    """The selection metric against the swept parameter(s): a line for one, a heatmap for two."""
    from runner.views.figures import new_figure

    numeric = [k for k in keys if all(_number(r.data.params.get(k)) is not None for r in runs)] or keys
    fig = new_figure(6.5, 4)
    ax = fig.subplots()
    if len(numeric) >= 2:
        import pandas as pd

        frame = pd.DataFrame([{"x": r.data.params.get(numeric[0]), "y": r.data.params.get(numeric[1]),
                               "v": r.data.metrics.get(metric, math.nan)} for r in runs])
        grid = frame.pivot_table(index="y", columns="x", values="v", aggfunc="max")
        image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(range(len(grid.columns)), grid.columns)
        ax.set_yticks(range(len(grid.index)), grid.index)
        ax.set_xlabel(numeric[0])
        ax.set_ylabel(numeric[1])
        fig.colorbar(image, ax=ax, label=metric)
    else:
        key = numeric[0] if numeric else None
        labels = [r.data.params.get(key, "") if key else r.info.run_name for r in runs]
        values = [r.data.metrics.get(metric, math.nan) for r in runs]
        if key and all(_number(label) is not None for label in labels):
            points = sorted(zip([_number(label) for label in labels], values, strict=True))
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        else:  # positions + labels: string categories make matplotlib log an INFO line per figure
            ax.plot(range(len(values)), values, marker="o", ls="none")
            ax.set_xticks(range(len(values)), [str(label) for label in labels])
        ax.set_xlabel(key or "run")
        ax.set_ylabel(metric)
    fig.tight_layout()
    return fig


def job_label(run: Run, sweep_name: str) -> str:
    """``<sweep name>-<job number>``: how the console and ``failed_jobs`` name a job (its run says what it is)."""
    return f"{sweep_name}-{run.data.tags.get('job_number', '?')}"


def _job_order(run: Run) -> int:
    number = run.data.tags.get("job_number", "")
    return int(number) if number.isdigit() else 0


def summarise(logger: MLflowLogger, state: dict[str, str], known: Mapping[str, pd.DataFrame] | None = None,
              worker: BootstrapWorker | None = None) -> tuple[dict[str, Any], list[Any]]:
    """(the sweep's summary with its winner, the runs that stand for its trials). This launch's jobs are reported
    as jobs; the winner is the best of every configuration its sweep name evaluated over all launches (the
    ledger), and is judged against all of them. ``known`` and ``worker``: as for ``trials_statistics``."""
    from runner.engine import ENGINE_VERSION
    from runner.sweeps.ledger import sweep_ledger, sweep_runs

    parent, metric, mode = state["parent_run_id"], state["metric"], state["mode"]
    tagged = sweep_runs(logger.client, logger.experiment_id, state["sweep_name"])  # one read: 1.5 s for 400 runs
    attempts = [r for r in tagged if r.data.tags.get("mlflow.parentRunId") == parent]  # every child has the name
    lost = [r for r in attempts if LOST_TAG in r.data.tags]  # a job's attempt whose process died: it ran again
    children = [r for r in attempts if LOST_TAG not in r.data.tags]
    failed = [job_label(r, state["sweep_name"]) for r in sorted(children, key=_job_order)
              if r.info.status != "FINISHED"]
    resumed = {r.data.tags["resumed_from"] for r in children if "resumed_from" in r.data.tags}
    ledger = sweep_ledger(logger.client, logger.experiment_id, state["sweep_name"], tagged)
    members = ledger.members(str(ENGINE_VERSION))
    finishers = ranked(members, metric, mode)  # read just now: ranked here, as the store would rank them
    best = run_to_dict(finishers[0]) if finishers else None
    keys = differing_params(members)
    summary: dict[str, Any] = {"sweep_name": state["sweep_name"], "parent_run_id": parent, "metric": metric,
                               "mode": mode, "jobs": len(children), "failed_jobs": failed, "winner": None,
                               "data_digests": data_digests(members),
                               "lost_attempts": {job_label(r, state["sweep_name"]): {"run_id": r.info.run_id,
                                                                   "why": r.data.tags[LOST_TAG]} for r in lost}}
    if best is not None:
        from runner.sweeps.trials import held_out_segment, selection_segment, trials_statistics

        winner = next(r for r in members if r.info.run_id == best["run_id"])
        own = {r.info.run_id for r in children}
        selection = selection_segment(metric)
        held_out = held_out_segment(selection or "", winner)
        summary["winner"] = {
            "run_id": best["run_id"], "run_name": winner.info.run_name, "resumed": best["run_id"] in resumed,
            "earlier_launch": best["run_id"] not in own and best["run_id"] not in resumed,
            "value": best["metrics"].get(metric), "params": {k: best["params"].get(k) for k in keys},
            "selection_segment": selection,
            "selection_metrics": segment_metrics(best["metrics"], selection or "val"),
            "test_segment": held_out or selection,  # without a held-out test: the selection's own
            "test_metrics": segment_metrics(best["metrics"], held_out or selection or "test"),
            "command": f"python -m runner {winner.data.tags.get('overrides', '')}".strip()}
        try:
            summary["trials"] = trials_statistics(metric, ledger, members, best["run_id"], known, worker)
        except Exception as error:  # noqa: BLE001 - shown as the reason (a missing table, say); the winner stands
            summary["trials"] = {"n_trials": ledger.n_trials, "scope": ledger.scope,
                                 "reason": f"no trials statistics: {error}"}
    return summary, members


def _record_on_parent(logger: MLflowLogger, summary: dict[str, Any], members: list[Any]) -> None:
    """Tags, ``best_run.json`` and the sweep figure on the parent run, which then ends."""
    winner = summary["winner"]
    logger.attach(summary["parent_run_id"])
    tags = {"best_run_id": winner["run_id"] if winner else "", "failed_jobs": ",".join(summary["failed_jobs"]) or
            "none", "jobs": str(summary["jobs"])}
    if winner is not None:
        tags.update({"best_value": repr(winner["value"]), "best_command": winner["command"]})
        trials = summary["trials"]
        tags["belief"] = trials.get("sentence") or trials.get("reason", "")
        logger.log_metrics({key: value for key, value in (
            ("n_trials", trials["n_trials"]), ("winner_deflated_sharpe_ratio", trials.get("deflated_sharpe_ratio")),
            ("n_trials_effective", trials.get("n_trials_effective")),
            ("winner_deflated_sharpe_ratio_effective", trials.get("deflated_sharpe_ratio_effective")),
            ("pbo", trials.get("pbo")), ("spa_pvalue", trials.get("spa_pvalue")),
            ("reality_check_pvalue", trials.get("reality_check_pvalue"))) if value is not None})
        from runner.tracking.recorder import log_metric_descriptions

        log_metric_descriptions(logger)
    logger.set_tags(tags)
    finished = [r for r in members if r.info.status == "FINISHED"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "best_run.json").write_text(json.dumps(to_jsonable(summary), indent=2))
        if finished:
            figure = sweep_figure(finished, summary["metric"], differing_params(members))
            figure.savefig(Path(tmp) / f"sweep_{summary['metric']}.png", dpi=90)
        logger.log_artifacts(tmp)
    logger.end_run("FINISHED" if winner is not None else "FAILED")


def report_sweep(sweep_dir: Path, state: dict[str, str], known: Mapping[str, pd.DataFrame] | None = None,
                 worker: BootstrapWorker | None = None) -> list[str]:
    """Print and save the winner of this sweep's children; returns the names of the failed jobs. ``known`` and
    ``worker``: as for ``trials_statistics``."""
    from runner.tracking.logger import MLflowLogger

    logger = MLflowLogger(state["experiment_name"], state["tracking_uri"])
    summary, members = summarise(logger, state, known, worker)
    (sweep_dir / "best_run.json").write_text(json.dumps(to_jsonable(summary), indent=2))
    print(format_winner(summary))
    from runner.tracking.store import ui_links

    print(f"saved: {(sweep_dir / 'best_run.json').absolute()}")
    print("\n".join(ui_links(state["tracking_uri"], logger.experiment_id, summary["parent_run_id"], "the sweep")))
    _record_on_parent(logger, summary, members)
    winner = summary["winner"]
    if winner is not None:  # a rule's sweep children draw no figures: its winner's, from its logged tables
        from runner.tracking.recorder import draw_logged_figures

        if not logger.client.list_artifacts(winner["run_id"], "figures"):
            draw_logged_figures(logger.client, winner["run_id"])
    return summary["failed_jobs"] + [f"{name} (an attempt's process died mid-job: run {lost['run_id']} FAILED; the "
                                     "job ran again)" for name, lost in summary["lost_attempts"].items()]


def _cell(name: str, value: float) -> str:
    """Counts as integers (a median count may be a half), everything else to four decimals."""
    if name == "num_trades" and math.isfinite(value) and float(value).is_integer():
        return f"{int(value):>15d}"
    return f"{value:>15.4f}"


def format_winner(summary: dict[str, Any]) -> str:
    lost = len(summary.get("lost_attempts", {}))
    lines = [f"\nsweep {summary['sweep_name']}: {summary['jobs']} jobs, {len(summary['failed_jobs'])} failed"
             + (f", {lost} lost a process mid-job and ran again" if lost else "")]
    winner = summary["winner"]
    if winner is None:
        lines.append(f"no run has a finite {summary['metric']}: no winner")
        return "\n".join(lines)
    trials = summary.get("trials", {})
    scope = trials.get("scope", {})
    if scope.get("launches", 1) > 1:
        lines.append(f"judged against all {trials['n_trials']} configurations of sweep name {summary['sweep_name']!r} "
                     f"over its {scope['launches']} launches" + (" (the winner ran in an earlier launch)"
                                                                   if winner.get("earlier_launch") else ""))
    lines.append(f"winner ({summary['mode']} {summary['metric']}): {winner['run_name']}  run id {winner['run_id']}")
    digests = summary.get("data_digests", [])
    if len(digests) > 1:
        lines.append(f"  these configurations mix data: {len(digests)} data digests ({', '.join(digests)}); the winner "
                     "is best on its own bars (python -m runner.report --digest D ranks one)")
    for key, value in winner["params"].items():
        lines.append(f"  {key} = {value}")
    selection, test = winner["selection_segment"] or "val", winner["test_segment"] or "test"
    test_label = test if test != selection else f"{test} (=sel.)"  # no untouched test: the selection segment again
    median = trials.get("median_test_metrics", {})
    width = max(14, len(test_label), len(f"{test} (median)") if median else 0)
    lines.append(f"  {'':<{width}}" + "".join(f"{n:>15}" for n in SHOWN_METRICS))
    for label, values in ((selection, winner["selection_metrics"]), (test_label, winner["test_metrics"])):
        lines.append(f"  {label:<{width}}" + "".join(_cell(n, values.get(n, math.nan)) for n in SHOWN_METRICS))
    if median:
        lines.append(f"  {test + ' (median)':<{width}}" + "".join(_cell(n, median.get(n, math.nan))
                                                                  for n in SHOWN_METRICS if n in median)
                     + f"   winner's {test} rank: {trials.get('winner_test_rank')} of {trials['n_trials']}")
    lines.append(f"reproduce: {winner['command']}")
    if trials.get("sentence") or trials.get("reason"):
        lines.append(trials.get("sentence") or trials["reason"])
    for key, name in (("pbo_reason", "PBO"), ("spa_reason", "reality checks")):
        if trials.get(key):
            lines.append(f"no {name}: {trials[key]}")
    return "\n".join(lines)
