"""The model registry: a run's logged model as a new version of a registered name, with its provenance."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, NotFoundError
from runner.tracking.queries import ENGINE_VERSION_TAG, engine_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

MODEL_NAME = "model"  # the name a run logs its model under (runs:/<run id>/model)


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


def logged_model_id(client: MlflowClient, run: Run) -> str:
    """The id of the model the run logged under ``model``; LookupError when it logged none."""
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'", max_results=100)
    ids = [m.model_id for m in models if m.name == MODEL_NAME]
    if not ids:
        raise NotFoundError(f"run {run.info.run_id} ({run.info.run_name}) logged no model (a model=none run trades "
                          "its strategy's rule): nothing to register. Rank model runs only, e.g. "
                          "--sweep with a model sweep, or register another run.")
    return ids[-1]


def register_model(client: MlflowClient, tracking_uri: str, run: Run, name: str, metric: str,
                   deflated_sharpe: float | None = None) -> Any:
    """Register the run's model as a new version of ``name`` (the registered model is created when new).

    Version tags: the run id and name, its sweep, its engine version, the ranking metric's value and the
    deflated Sharpe when known. The same run registered twice under one name is refused (ValueError).
    """
    import mlflow

    if not isinstance(name, str) or not name.strip() or "'" in name:
        raise ConfigError(f"--register {name!r}: give a registered model name (no quotes), e.g. momentum_mlp.")
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
    if existing:
        raise ConfigError(f"run {run.info.run_id} is already version {existing[0].version} of registered model "
                         f"{name!r}; it is not registered twice.")
    model_id = logged_model_id(client, run)
    value = run.data.metrics.get(metric)
    tags = {"run_id": run.info.run_id, "run_name": run.info.run_name or "",
            "sweep_name": run.data.tags.get("sweep_name", ""), ENGINE_VERSION_TAG: str(engine_version(run)),
            metric: repr(value) if value is not None else "",
            "deflated_sharpe_ratio": (repr(deflated_sharpe) if deflated_sharpe is not None
                                      and math.isfinite(deflated_sharpe) else "n/a")}
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.register_model(f"models:/{model_id}", name, tags=tags)
