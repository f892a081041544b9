"""The end of a sweep: read every child back from MLflow, pick the winner, print, save and tag it."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from runner.params import to_jsonable


def differing_params(runs: list[Any]) -> list[str]:
    """Param keys whose values are not the same across the runs that logged them (what the sweep varied)."""
    keys = sorted({k for r in runs for k in r.data.params})
    return [k for k in keys if len({r.data.params[k] for r in runs if k in r.data.params}) > 1]


def segment_metrics(metrics: dict[str, float], segment: str) -> dict[str, float]:
    return {k[len(segment) + 1:]: v for k, v in sorted(metrics.items()) if k.startswith(f"{segment}_")}


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def sweep_figure(runs: list[Any], metric: str, keys: list[str]) -> Any:
    """The selection metric against the swept parameter(s): a line for one, a heatmap for two."""
    from runner.plots import new_figure

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


def sweep_children(logger: Any, parent_run_id: str) -> list[Any]:
    return logger.client.search_runs([logger.experiment_id], max_results=10000,
                                     filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def sweep_members(logger: Any, children: list[Any]) -> list[Any]:
    """The runs that stand for a sweep's jobs: a resumed job's child only points (tag ``resumed_from``)
    at the earlier FINISHED run of the same config, which then stands in for it."""
    resumed = [r.data.tags["resumed_from"] for r in children if "resumed_from" in r.data.tags]
    own = [r for r in children if "resumed_from" not in r.data.tags]
    if not resumed:
        return own
    ids = ", ".join(f"'{run_id}'" for run_id in sorted(set(resumed)))
    return own + list(logger.client.search_runs([logger.experiment_id], max_results=len(resumed),
                                                filter_string=f"attributes.run_id IN ({ids})"))


def members_filter(runs: list[Any]) -> str:
    return "attributes.run_id IN ({})".format(", ".join(f"'{r.info.run_id}'" for r in runs))


def report_sweep(sweep_dir: Path, state: dict[str, str]) -> list[str]:
    """Print and save the winner of this sweep's children; returns the names of the failed jobs."""
    from runner.logger import MLflowLogger

    logger = MLflowLogger(state["experiment_name"], state["tracking_uri"])
    parent, metric, mode = state["parent_run_id"], state["metric"], state["mode"]
    children = sweep_children(logger, parent)
    failed = sorted((r.info.run_name for r in children if r.info.status != "FINISHED"),
                    key=lambda name: int(name.rsplit("-", 1)[-1]) if name.rsplit("-", 1)[-1].isdigit() else 0)
    resumed = {r.data.tags["resumed_from"] for r in children if "resumed_from" in r.data.tags}
    children = sweep_members(logger, children)
    best = logger.get_best_run(metric, mode, filter_string=members_filter(children)) if children else None
    finished = [r for r in children if r.info.status == "FINISHED"]
    keys = differing_params(children)
    summary: dict[str, Any] = {"sweep_name": state["sweep_name"], "parent_run_id": parent, "metric": metric,
                               "mode": mode, "jobs": len(children), "failed_jobs": failed, "winner": None}
    if best is not None:
        winner = next(r for r in children if r.info.run_id == best["run_id"])
        overrides = winner.data.tags.get("overrides", "")
        summary["winner"] = {
            "run_id": best["run_id"], "run_name": winner.info.run_name, "resumed": best["run_id"] in resumed,
            "value": best["metrics"].get(metric),
            "params": {k: best["params"].get(k) for k in keys},
            "val_metrics": segment_metrics(best["metrics"], "val"),
            "test_metrics": segment_metrics(best["metrics"], "test"),
            "command": f"python -m runner {overrides}".strip()}
    (sweep_dir / "best_run.json").write_text(json.dumps(to_jsonable(summary), indent=2))
    print(format_winner(summary))
    logger.attach(parent)
    tags = {"best_run_id": best["run_id"] if best else "", "failed_jobs": ",".join(failed) or "none",
            "jobs": str(len(children))}
    if best is not None:
        tags.update({"best_value": repr(best["metrics"].get(metric)), "best_command": summary["winner"]["command"]})
    logger.set_tags(tags)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "best_run.json").write_text(json.dumps(to_jsonable(summary), indent=2))
        if finished:
            figure = sweep_figure(finished, metric, keys)
            figure.savefig(Path(tmp) / f"sweep_{metric}.png", dpi=90)
        logger.log_artifacts(tmp)
    logger.end_run("FINISHED" if best is not None else "FAILED")
    return failed


def format_winner(summary: dict[str, Any]) -> str:
    lines = [f"\nsweep {summary['sweep_name']}: {summary['jobs']} jobs, {len(summary['failed_jobs'])} failed"]
    winner = summary["winner"]
    if winner is None:
        lines.append(f"no run has a finite {summary['metric']}: no winner")
        return "\n".join(lines)
    lines.append(f"winner ({summary['mode']} {summary['metric']}): {winner['run_name']}  run id {winner['run_id']}")
    for key, value in winner["params"].items():
        lines.append(f"  {key} = {value}")
    names = ("sharpe_ratio", "total_return", "max_drawdown", "num_trades")
    lines.append(f"  {'':<14}" + "".join(f"{n:>15}" for n in names))
    for segment in ("val", "test"):
        values = winner[f"{segment}_metrics"]
        lines.append(f"  {segment:<14}" + "".join(f"{values.get(n, math.nan):>15.4f}" for n in names))
    lines.append(f"reproduce: {winner['command']}")
    return "\n".join(lines)
