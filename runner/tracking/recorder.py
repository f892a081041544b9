"""What one run leaves in MLflow: params, tags, metrics, curves, tables, figures, config and the model.

All files are staged in one temp dir and uploaded with one call; params, metrics and tags go in batches,
so the number of MLflow calls does not grow with bars or epochs.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runner.tracking.sanitize import flatten, redact_tree, to_jsonable

if TYPE_CHECKING:
    from runner.evaluation.outcome import Outcome, Prepared
    from runner.ml.training import TrainingResult
    from runner.tracking.logger import MLflowLogger

PARAM_GROUPS = ("data", "model", "trainer", "strategy", "backtest", "evaluation", "selection")
DESCRIPTIONS_ARTIFACT = "params/descriptions.json"
PNG = {"dpi": 90, "pil_kwargs": {"compress_level": 1}}  # fast zlib: a slightly larger file, less CPU per run


@dataclass
class RunExtras:
    """Context the run cannot derive from its config: the redacted config and the provenance files.

    ``hydra_files`` holds what Hydra writes to ``.hydra/`` (``config.yaml``, ``hydra.yaml``,
    ``overrides.yaml``), taken from this process's own composed config, never read back from a folder
    that another process could have written.
    """

    redacted_config: dict[str, Any]
    hydra_files: dict[str, Any] = field(default_factory=dict)


def _yaml_text(data: Any) -> str:
    return yaml.dump(to_jsonable(data), Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def run_params(redacted_config: dict[str, Any]) -> dict[str, Any]:
    """Dotted params from the redacted config: data.*, model.*, trainer.*, strategy.*, backtest.*, seed, ..."""
    params = flatten({k: redacted_config[k] for k in PARAM_GROUPS if k in redacted_config})
    params["seed"] = redacted_config.get("seed")
    params["experiment_name"] = redacted_config.get("experiment_name")
    return params


def log_run_start(logger: MLflowLogger, extras: RunExtras) -> None:
    """Params first (ints of float keys as floats), so a run that fails or is killed later still shows its
    config, with what each key means in ``params/descriptions.json``."""
    from runner.config.docs import LOGGED_ONLY, config_params, consistent_types, descriptions

    config = extras.redacted_config
    known = config_params(config)  # the schemas' and the strategy's and model's signatures, read once
    logged = logger.log_params(consistent_types(config, run_params(config), known))
    logger.log_dict(descriptions(config, [*logged, *LOGGED_ONLY], known), DESCRIPTIONS_ARTIFACT)


def _log_training(logger: MLflowLogger, training: TrainingResult) -> None:
    logger.log_metric_history(training.history)
    logger.log_metrics({"best_epoch": float(training.best_epoch), "train_seconds": float(training.seconds)})
    logger.set_tags({"train_device": training.device})  # what trainer.device=auto picked


def stage_figures(root: Path, prepared: Prepared, outcome: Outcome) -> None:
    """The run's figures, as ``root/figures/*.png``."""
    from runner.views.figures import run_figures

    (root / "figures").mkdir()
    for name, figure in run_figures(prepared, outcome).items():
        figure.savefig(root / "figures" / name, **PNG)


def log_views(logger: MLflowLogger, run_id: str, prepared: Prepared, outcome: Outcome) -> None:
    """What ``log_outcome(views=False)`` left out of a (finished) holdout run: its figures and its tables' JSON
    views, so that it then holds what its single run holds."""
    logger.attach(run_id)
    try:
        logger.log_backtest_results(outcome.result.to_results(), log_metrics=False)
        with tempfile.TemporaryDirectory() as tmp:
            stage_figures(Path(tmp), prepared, outcome)
            logger.log_artifacts(tmp)
    finally:
        logger.detach()


def _stage_files(root: Path, prepared: Prepared, outcome: Outcome, extras: RunExtras, figures: bool = True) -> None:
    """Figures, the config, Hydra's files (redacted) and the model's standardisation, under ``root``."""
    if figures:
        stage_figures(root, prepared, outcome)
    (root / "config.yaml").write_text(_yaml_text(extras.redacted_config))
    if extras.hydra_files:
        (root / ".hydra").mkdir()
        for name, content in extras.hydra_files.items():
            (root / ".hydra" / name).write_text(_yaml_text(redact_tree(content)))
    dataset = outcome.dataset
    if dataset is not None:
        (root / "model_inputs").mkdir()
        (root / "model_inputs" / "standardisation.json").write_text(
            json.dumps(to_jsonable(dataset.standardisation()), indent=2))


def log_outcome(logger: MLflowLogger, prepared: Prepared, outcome: Outcome, extras: RunExtras | None,
                views: bool = True) -> None:
    """Everything after the backtest: curves, tables, metrics, files and the model, into the active run.
    ``views=False`` leaves out what is there to be looked at, the figures and the tables' JSON views for MLflow's
    table viewer (the Parquet records stay): a grid draws them for its best configurations only
    (``log_views``)."""
    extras = extras or RunExtras(redact_tree(dataclasses.asdict(prepared.config)))
    if outcome.training is not None:
        _log_training(logger, outcome.training)
    logger.log_params({"backtest.periods_per_year_used": prepared.backtest.periods_per_year})
    if not prepared.book.series:  # which universe, and how many assets it held
        universe = prepared.book
        logger.log_params({"universe.name": universe.name, "universe.n_assets": universe.n_assets,
                           "universe.symbols": universe.symbols})
        logger.set_tags({"universe": universe.name, "n_assets": str(universe.n_assets)})
    results = outcome.result.to_results()
    if outcome.cpcv is not None:  # the paths stand for the backtest: their distribution, records and splits
        paths = outcome.cpcv
        results = {"metrics": paths.distribution, "cpcv_paths": paths.paths_table(),
                   "cpcv_splits": paths.plan.splits_table(),
                   "cpcv": {"groups": paths.plan.groups, "n_paths": paths.plan.n_paths,
                            "embargo_bars": paths.plan.embargo,
                            "paths": paths.plan.paths.T.tolist()}}  # path -> the split each group is taken from
        logger.log_metric_history({f"path_{k}": v for k, v in paths.path_metrics.items()})
    elif outcome.walk is not None:  # the stitched record and the folds stand for the per-bar table
        results.pop("portfolio_values")
        results.update(walk_forward=outcome.walk.stitched_table(), folds=outcome.walk.folds_table(prepared.book.index))
        if outcome.walk.final is not None:
            results["final_test"] = outcome.walk.final_table()
        logger.log_metric_history({f"fold_test_{k}": v for k, v in outcome.walk.fold_metrics.items()})
    logger.log_backtest_results(results, tables="auto" if views else "parquet")
    with tempfile.TemporaryDirectory() as tmp:
        _stage_files(Path(tmp), prepared, outcome, extras, views)
        logger.log_artifacts(tmp)
    if outcome.training is not None:
        logger.log_model(outcome.training.model, "model")  # the example comes from model.example_input
