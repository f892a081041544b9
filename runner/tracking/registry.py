"""The model registry: a run's packaged strategy as a new version of a registered name, with its provenance, an
alias, and the gate a run must clear first."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError
from runner.tracking.queries import ENGINE_VERSION_TAG, engine_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

ALIAS = re.compile(r"[A-Za-z0-9_\-]{1,255}")  # what MLflow takes as an alias
ALIAS_VERSION = re.compile(r"[vV]\d+")  # reserved by MLflow: it reads like a version


def registered_run_ids(client: MlflowClient) -> dict[str, list[str]]:
    """Every run that backs a registered model version: run id -> ["NAME v3", ...]."""
    found: dict[str, list[str]] = {}
    token = None
    while True:
        page = client.search_model_versions(max_results=10000, page_token=token)
        for version in page:
            if version.run_id:
                found.setdefault(version.run_id, []).append(f"{version.name} v{version.version}")
        token = page.token
        if not token:
            return found


@dataclass
class Gate:
    """What a run must clear to be registered with ``--gate`` (README: From a winner to a signal)."""

    min_dsr: float = 0.95  # the deflated Sharpe of the run given the trials in scope
    max_pvalue: float = 0.05  # the sweep's reality check (Hansen's SPA p-value), when its winner is the run


def held_out_metric(metric: str) -> str:
    """The held-out counterpart of a selection metric: ``val_X`` -> ``test_X``, ``oos_X`` -> ``final_test_X``."""
    for selection, held_out in (("val_", "test_"), ("oos_", "final_test_")):
        if metric.startswith(selection):
            return held_out + metric[len(selection):]
    return metric


def gate_refusal(client: MlflowClient, run: Run, name: str, alias: str | None, metric: str, mode: str,
                 belief: dict[str, Any], gate: Gate) -> str | None:
    """Why ``run`` may not be registered as ``name`` (None: it clears the gate): its deflated Sharpe, the reality
    check of the sweep it won, and a better held-out metric than ``name@alias`` on the same data digest."""
    from mlflow.exceptions import MlflowException

    from runner.tracking.queries import DATA_DIGEST_TAG

    dsr = belief.get("deflated_sharpe_ratio")
    if dsr is None or not math.isfinite(dsr):
        return f"no deflated Sharpe for the run ({belief.get('reason', 'n/a')}), and the gate needs one"
    if dsr < gate.min_dsr:
        return (f"deflated Sharpe {dsr:.4f} < {gate.min_dsr} given {belief.get('n_trials')} trials "
                "(--gate-dsr sets the bar)")
    pvalue = sweep_pvalue(client, run)
    if pvalue is not None and pvalue > gate.max_pvalue:
        return (f"reality check: its sweep's SPA p-value {pvalue:.4f} > {gate.max_pvalue} (no evidence the best "
                "configuration beats buy and hold after the search; --gate-pvalue sets the bar)")
    if alias is None:
        return None
    try:
        champion = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None  # no champion yet
    held_out = held_out_metric(metric)
    incumbent = client.get_run(champion.run_id)
    ours, theirs = run.data.tags.get(DATA_DIGEST_TAG), incumbent.data.tags.get(DATA_DIGEST_TAG)
    if ours != theirs:
        return (f"{name}@{alias} (version {champion.version}, run {champion.run_id}) was measured on other data "
                f"(data digest {theirs} vs {ours}): not comparable; run its configuration on this data first")
    new, old = run.data.metrics.get(held_out, math.nan), incumbent.data.metrics.get(held_out, math.nan)
    if not math.isfinite(new):
        return f"it has no finite {held_out} to compare with {name}@{alias}'s (version {champion.version})"
    if math.isfinite(old) and not (new > old if mode == "max" else new < old):
        return (f"{held_out} {new:.4f} is not better than {name}@{alias}'s {old:.4f} (version {champion.version}) "
                "on the same data")
    return None


def sweep_pvalue(client: MlflowClient, run: Run) -> float | None:
    """The SPA p-value of the sweep the run won (logged on the sweep's parent), or None when it won none."""
    from mlflow.exceptions import MlflowException

    parent = run.data.tags.get("mlflow.parentRunId")
    if not parent:
        return None
    try:
        sweep = client.get_run(parent)
    except MlflowException:
        return None
    if sweep.data.tags.get("best_run_id") != run.info.run_id:
        return None
    return sweep.data.metrics.get("spa_pvalue")


def refuse_twice(client: MlflowClient, run: Run, name: str) -> None:
    """The same run is never registered twice under one name (ConfigError)."""
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
    if existing:
        raise ConfigError(f"run {run.info.run_id} is already version {existing[0].version} of registered model "
                          f"{name!r}; it is not registered twice.")


def register_model(client: MlflowClient, tracking_uri: str, run: Run, model_id: str, name: str, metric: str,
                   deflated_sharpe: float | None = None, alias: str | None = None) -> Any:
    """Register the run's logged model ``model_id`` (its packaged strategy: ``runner.serving.packaging``) as a new
    version of ``name`` (the registered model is created when new), and point ``alias`` at it when given.

    Version tags: the run id and name, its sweep, its engine version, its data digest, the ranking metric's value
    and the deflated Sharpe when known.
    """
    import mlflow

    from runner.tracking.queries import DATA_DIGEST_TAG

    value = run.data.metrics.get(metric)
    tags = {"run_id": run.info.run_id, "run_name": run.info.run_name or "",
            "sweep_name": run.data.tags.get("sweep_name", ""), ENGINE_VERSION_TAG: str(engine_version(run)),
            DATA_DIGEST_TAG: run.data.tags.get(DATA_DIGEST_TAG, ""),
            metric: repr(value) if value is not None else "",
            "deflated_sharpe_ratio": (repr(deflated_sharpe) if deflated_sharpe is not None
                                      and math.isfinite(deflated_sharpe) else "n/a")}
    mlflow.set_tracking_uri(tracking_uri)
    version = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version


def check_name(name: str, alias: str | None) -> None:
    """A registered model's name and alias as MLflow takes them, or one line saying what is allowed."""
    if not isinstance(name, str) or not name.strip() or "'" in name:
        raise ConfigError(f"--register {name!r}: give a registered model name (no quotes), e.g. momentum_mlp.")
    if alias is not None and (not ALIAS.fullmatch(alias) or ALIAS_VERSION.fullmatch(alias) or alias == "latest"):
        raise ConfigError(f"--alias {alias!r}: allowed are letters, digits, _ and - (not 'latest' or v<number>), "
                          "e.g. champion.")
