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

from runner.errors import NotFoundError
from runner.tracking.sanitize import flatten, redact_tree, to_jsonable

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from runner.engine.backtest import BacktestResult
    from runner.evaluation.outcome import Outcome, Prepared
    from runner.ml.training import TrainingResult
    from runner.tracking.logger import MLflowLogger

PARAM_GROUPS = ("data", "model", "trainer", "strategy", "backtest", "evaluation", "selection")
DESCRIPTIONS_ARTIFACT = "params/descriptions.json"
METRIC_DESCRIPTIONS_ARTIFACT = "metrics/descriptions.json"
TEARSHEET = "tearsheet.html"
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


MODEL_ONLY = ("trainer", "strategy.forecast_threshold")  # keys that mean nothing without a model


def run_params(redacted_config: dict[str, Any]) -> dict[str, Any]:
    """Dotted params from the redacted config: data.*, model.*, trainer.*, strategy.*, backtest.*, seed, ...; only what
    applies to the run: without a model, no training settings and no forecast threshold (``config.yaml`` keeps all)."""
    params = flatten({k: redacted_config[k] for k in PARAM_GROUPS if k in redacted_config})
    if not (redacted_config.get("model") or {}).get("_target_"):
        params = {k: v for k, v in params.items() if not any(k == m or k.startswith(f"{m}.") for m in MODEL_ONLY)}
    params["seed"] = redacted_config.get("seed")
    params["experiment_name"] = redacted_config.get("experiment_name")
    return params


def log_metric_descriptions(logger: MLflowLogger) -> None:
    """``metrics/descriptions.json``: what each metric the run logged means, and its unit
    (``runner.engine.metric_docs``, the source of the README's metric table too)."""
    from runner.engine.metric_docs import descriptions

    logger.log_dict(descriptions(sorted(logger.metric_keys)), METRIC_DESCRIPTIONS_ARTIFACT)


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
    """The run's figures, as ``root/figures/*.png``, and its tearsheet, ``root/tearsheet.html``."""
    from runner.views.figures import figure_title, run_figures
    from runner.views.tearsheet import tearsheet_html

    (root / "figures").mkdir()
    for name, figure in run_figures(prepared, outcome).items():
        figure.savefig(root / "figures" / name, **PNG)
    walk, cpcv = outcome.walk, outcome.cpcv
    (root / TEARSHEET).write_text(tearsheet_html(
        outcome.result, figure_title(prepared), prepared.backtest.periods_per_year,
        walk.folds_table(prepared.book.index) if walk is not None else None,
        cpcv.distribution if cpcv is not None else None))


def log_views(logger: MLflowLogger, run_id: str, prepared: Prepared, outcome: Outcome) -> None:
    """What ``log_outcome(figures=False, tables="parquet")`` left out of a (finished) holdout run: its figures and its
    tables' JSON views, so that it then holds what its single run holds."""
    logger.attach(run_id)
    try:
        logger.log_backtest_results(outcome.result.to_results(), log_metrics=False)
        with tempfile.TemporaryDirectory() as tmp:
            stage_figures(Path(tmp), prepared, outcome)
            logger.log_artifacts(tmp)
    finally:
        logger.detach()


def drawn_later(params: dict[str, Any]) -> bool:
    """Whether a run's figures can be drawn from its logged tables (``draw_logged_figures``): a rule (no model) judged
    on one holdout backtest. A sweep's such children log none; the sweep draws its winner's."""
    return params.get("model._target_") in (None, "None", "") and str(
        params.get("evaluation._target_", "")).endswith("HoldoutEvaluation")


def logged_result(artifact_uri: str) -> BacktestResult:
    """A holdout run's backtest as its figures need it, read back from its logged per-bar table (and a universe's
    weights table): the curves, weights and segments; no trades, fills or metrics."""
    import numpy as np
    import pandas as pd

    from runner.engine.backtest import BacktestResult
    from runner.tracking.tables import read_backtest_table

    table = read_backtest_table(artifact_uri, "portfolio_values")
    segments = pd.Categorical(table["segment"])
    codes = segments.codes
    bounds = {}
    for code, name in enumerate(segments.categories):
        rows = np.flatnonzero(codes == code)
        bounds[str(name)] = (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, 0)
    index = pd.DatetimeIndex(table["timestamp"]) if pd.api.types.is_datetime64_any_dtype(table["timestamp"]) else \
        pd.Index(table["timestamp"])
    symbols = asset_weights = None
    try:
        weights = read_backtest_table(artifact_uri, "weights")
    except NotFoundError:  # a single series
        weights = None
    if weights is not None:
        symbols = list(pd.Categorical(weights["symbol"]).categories)
        frame = weights.pivot_table(index="timestamp", columns="symbol", values="weight", observed=False)
        asset_weights = frame.reindex(index=index, columns=symbols).ffill().fillna(0.0).to_numpy()
    column = {name: table[name].to_numpy(dtype=float) for name in
              ("close", "weight", "strategy_return", "equity", "benchmark_equity", "drawdown")}
    empty = pd.DataFrame()
    return BacktestResult(index, column["close"], column["weight"], np.full(len(table), np.nan),
                          column["strategy_return"], column["equity"], column["benchmark_equity"], column["drawdown"],
                          bounds, empty, empty, {}, symbols, asset_weights)


def draw_logged_figures(client: MlflowClient, run_id: str) -> list[str]:
    """Draw a finished run's figures from its logged tables and log them into it, with its tables' JSON views where
    it has none (``drawn_later`` runs only, which log their tables as Parquet in a sweep; ``python -m runner.report
    --figures RUN_ID``): it then holds what its single run holds. Returns the files logged (none: not such a run)."""
    from runner.views.figures import equity_figure, weights_figure

    run = client.get_run(run_id)
    params = run.data.params
    if not drawn_later(params):
        return []
    strategy = str(params.get("strategy._target_", "")).rsplit(".", 1)[-1]
    result = logged_result(run.info.artifact_uri)
    title = f"{strategy} on {run.data.tags.get('data', 'data')}" + (
        f" ({len(result.symbols)} assets)" if result.symbols is not None else "")
    figures = {"equity.png": equity_figure(result, title=title)}
    if result.symbols is not None:
        figures["weights.png"] = weights_figure(result, title=f"{title}: weights")
    from runner.tracking.tables import VIEWS_TAG, logged_results, read_backtest_table, views_tag, write_backtest_files
    from runner.views.tearsheet import tearsheet_html

    try:
        result.trades = read_backtest_table(run.info.artifact_uri, "trades")
    except NotFoundError:  # a run logged without its trades table: the tearsheet says there are none
        pass
    result.metrics = {segment: {key[len(segment) + 1:]: value for key, value in run.data.metrics.items()
                                if key.startswith(f"{segment}_")} for segment in result.bounds}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "figures").mkdir()
        for name, figure in figures.items():
            figure.savefig(Path(tmp) / "figures" / name, **PNG)
        (Path(tmp) / TEARSHEET).write_text(tearsheet_html(result, title, float(params.get(
            "backtest.periods_per_year_used", 252))))
        views = []
        if VIEWS_TAG not in run.data.tags:  # the same record again, with its views
            (Path(tmp) / "backtest").mkdir()
            views = write_backtest_files(Path(tmp) / "backtest", logged_results(run.info.artifact_uri))
        client.log_artifacts(run_id, tmp)
    for key, value in views_tag(views).items():
        client.set_tag(run_id, key, value)
    return [f"figures/{name}" for name in figures] + [TEARSHEET] + [f"backtest/{name}" for name in views]


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
                figures: bool = True, tables: str = "auto") -> None:
    """Everything after the backtest: curves, tables, metrics, files and the model, into the active run.
    ``figures=False`` leaves the figures out (a sweep draws its winner's: ``draw_logged_figures``);
    ``tables="parquet"`` the tables' JSON views for MLflow's table viewer (a grid logs them for its best
    configurations only: ``log_views``)."""
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
    logger.log_backtest_results(results, tables=tables)
    with tempfile.TemporaryDirectory() as tmp:
        _stage_files(Path(tmp), prepared, outcome, extras, figures)
        logger.log_artifacts(tmp)
    log_metric_descriptions(logger)
    if outcome.training is not None:
        logger.log_model(outcome.training.model, "model")  # the example comes from model.example_input
