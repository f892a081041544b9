"""A finished run's whole strategy packaged as an MLflow model in that run (models-from-code, the project's code
bundled, the network as a ``pt2`` artifact): what ``runner.report --register`` puts in the registry."""

from __future__ import annotations

import importlib.util
import json
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runner.errors import NotFoundError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

STRATEGY_MODEL = "strategy"  # the name of the packaged strategy among a run's logged models
MODEL_CODE = Path(__file__).resolve().parent / "model_code.py"  # what MLflow runs to load the model
NETWORK = "model"  # the name a run logs its network under (runs:/<run id>/model)


def strategy_spec(config: dict[str, Any], run: Run) -> dict[str, Any]:
    """What the served strategy needs of the run's config: the strategy's keys, the leverage cap, and for a
    universe its alignment rules."""
    from runner.data.loader import UNIVERSE_SHARED

    universe = {key: config["data"].get(key) for key in UNIVERSE_SHARED} if run.data.tags.get("universe") else None
    return {"strategy": config["strategy"], "max_leverage": float(config["backtest"]["max_leverage"]),
            "universe": universe, "data_name": run.data.tags.get("data", "data"), "run_id": run.info.run_id}


def code_paths(config: dict[str, Any]) -> list[str]:
    """The packages the strategy runs on: ``runner``, ``strategies``, and the top-level package of a strategy or
    network defined elsewhere (a user's own module)."""
    packages = {"runner", "strategies"}
    for group in ("strategy", "model"):
        target = (config.get(group) or {}).get("_target_")
        if target:
            packages.add(str(target).split(".", 1)[0])
    paths = []
    for package in sorted(packages):
        spec = importlib.util.find_spec(package)
        if spec is None:  # nothing importable by that name: the config's own error, raised when it was built
            continue
        if spec.submodule_search_locations:  # a package: its folder
            paths.append(str(next(iter(spec.submodule_search_locations))))
        elif spec.origin:  # a single module: its file
            paths.append(str(spec.origin))
    return paths


def requirements(with_network: bool) -> list[str]:
    """The installed versions of what the served strategy imports (explicit: MLflow's inference loads the model)."""
    names = ["mlflow", "numpy", "pandas", "scipy", "pyyaml", "omegaconf", "hydra-core"] + (
        ["torch"] if with_network else [])
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def network_model_id(client: MlflowClient, run: Run) -> str:
    """The id of the network the run logged under ``model``; NotFoundError when it logged none."""
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'", max_results=100)
    ids = [m.model_id for m in models if m.name == NETWORK]
    if not ids:
        raise NotFoundError(f"run {run.info.run_id} ({run.info.run_name}) trained a model but logged none (its "
                            "network is missing): nothing to package. Register another run.")
    return ids[-1]


def log_strategy_model(client: MlflowClient, tracking_uri: str, run: Run) -> str:
    """Package the run's strategy as a logged model of that run and return its model id. A model run carries its
    network (the run's logged ``model``) and the training's standardisation; a rule run, its rule alone."""
    import mlflow
    from mlflow.artifacts import download_artifacts
    from mlflow.entities import LoggedModelOutput
    from mlflow.exceptions import MlflowException

    from runner.serving.strategy import SPEC_FILE, STANDARDISATION_FILE, signature

    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config = yaml.safe_load(Path(download_artifacts(run_id=run_id, artifact_path="config.yaml",
                                                           dst_path=tmp, tracking_uri=tracking_uri)).read_text())
        except (MlflowException, OSError) as error:  # not there (a run logged by hand, or before config.yaml)
            raise NotFoundError(f"run {run_id} has no config.yaml artifact to package its strategy from "
                                f"({type(error).__name__}).") from None
        spec = strategy_spec(config, run)
        (Path(tmp) / SPEC_FILE).write_text(json.dumps(spec, indent=2))
        artifacts = {"spec": str(Path(tmp) / SPEC_FILE)}
        network = network_model_id(client, run) if config.get("model", {}).get("_target_") else None
        if network is not None:
            artifacts["network"] = download_artifacts(artifact_uri=f"models:/{network}",
                                                      dst_path=str(Path(tmp) / "network"), tracking_uri=tracking_uri)
            artifacts["standardisation"] = download_artifacts(
                run_id=run_id, artifact_path=f"model_inputs/{STANDARDISATION_FILE}", dst_path=tmp,
                tracking_uri=tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        model = client.create_logged_model(run.info.experiment_id, name=STRATEGY_MODEL, source_run_id=run_id,
                                           model_type="strategy", tags={"runner.packaged_from": run_id})
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        mlflow.pyfunc.log_model(name=STRATEGY_MODEL, python_model=str(MODEL_CODE), artifacts=artifacts,
                                code_paths=code_paths(config), signature=signature(spec["universe"] is not None),
                                pip_requirements=requirements(network is not None), model_id=model.model_id)
    client.finalize_logged_model(model.model_id, "READY")
    return model.model_id
