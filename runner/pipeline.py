"""The pipeline of one run, for a single run and a sweep's job alike (``run_tracked``): its config logged, the
computing (``runner.evaluation.experiment.compute``, no MLflow), the recorder; and a single run around it
(validate before any MLflow run exists, print the summary).

Also what a run and a sweep job share: the tags that identify a run, its provenance files and the
tracking URI. User errors print one line and exit 2; Ctrl-C/SIGTERM/SIGHUP exit 130 with the run KILLED.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from runner.evaluation.outcome import Outcome, Prepared
    from runner.logger import MLflowLogger

from runner.errors import NotFoundError, UserError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SERVER_LOST_EXIT = 3


class ServerLost(SystemExit):
    """The tracking server went away: the run's record holds everything; it exits with SERVER_LOST_EXIT."""

    def __init__(self, folder: Path | str, tracking_uri: str) -> None:
        from runner.tracking.sanitize import redact_uri

        where = Path(folder).absolute()
        print(f"error: the tracking server {redact_uri(tracking_uri)} was lost; everything is in {where}. Upload it "
              f"once the server is back: python -m runner.sync {where}", file=sys.stderr)
        super().__init__(SERVER_LOST_EXIT)


def run_folder() -> Path:
    """This run's (or sweep job's) own output folder."""
    return Path(HydraConfig.get().runtime.output_dir)


def available(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def require_strategy() -> None:
    """The one check that a strategy was given (Hydra's choices know; the config alone cannot tell)."""
    if HydraConfig.get().runtime.choices.get("strategy") is None:
        raise NotFoundError(f"no strategy given: add +strategy=NAME, one of: {', '.join(available('strategy'))}")


@functools.lru_cache(maxsize=1)
def git_tags() -> dict[str, str]:
    """Commit and dirty flag of the project checkout (asked once per process: jobs of a sweep share it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5)
        return {"git_commit": commit.stdout.strip(), "git_dirty": str(bool(dirty.stdout.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        return {}


def config_hash(resolved: dict[str, Any]) -> str:
    """Identity of an experiment's settings (for resuming sweeps): everything but naming, tracking and output."""
    left_out = ("run_name", "sweep_name", "resume", "reuse_runs", "tracking", "experiment_name", "verbose")
    relevant = {k: v for k, v in resolved.items() if k not in left_out}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def task_overrides(hydra: Mapping[str, Any] | None = None) -> list[str]:
    """This job's overrides as typed (reading them through OmegaConf would resolve ``${oc.env:..}``). ``hydra``:
    the job's Hydra node (a config or a plain mapping of one); None: this process's (``HydraConfig``)."""
    task = (hydra if hydra is not None else HydraConfig.get())["overrides"]["task"]
    return [str(o) for o in (OmegaConf.to_container(task, resolve=False) if OmegaConf.is_config(task) else task)]


NAME_LIMIT = 60  # characters: about what MLflow's runs table shows of a name


def run_title(swept: Sequence[str] = (), hydra: Mapping[str, Any] | None = None) -> str:
    """What a run is, as its name: ``strategy-model-data`` (the group choices) and the evaluation unless holdout,
    then a sweep job's swept values with their last key only (``momentum-mlp-sp500 walk_forward lookback=20``), cut
    to ``NAME_LIMIT`` characters."""
    choices = (hydra if hydra is not None else HydraConfig.get())["runtime"]["choices"]
    values = []
    for override in swept:
        key, _, value = override.lstrip("+~").partition("=")
        if "." in key:  # a group's choice (strategy=...) is in the head already
            values.append(f"{key.rsplit('.', 1)[-1]}={value}")
    head = "-".join(str(choices.get(group)) for group in ("strategy", "model", "data"))
    evaluation = choices.get("evaluation")
    if evaluation not in (None, "holdout"):  # a walk-forward or CPCV run says so: its metrics are other ones
        head += f" {evaluation}"
    name = " ".join([head, *values])
    return name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 1] + "…"


def run_tags(resolved: dict[str, Any], hydra: Mapping[str, Any] | None = None) -> dict[str, str]:
    choices = (hydra if hydra is not None else HydraConfig.get())["runtime"]["choices"]
    tags = {"strategy": str(choices.get("strategy")), "model": str(choices.get("model")),
            "data": str(choices.get("data")), "overrides": " ".join(task_overrides(hydra)),
            "argv": " ".join(sys.argv), "config_hash": config_hash(resolved),
            "runner.host": socket.gethostname(), "runner.pid": str(os.getpid())}
    tags.update(git_tags())
    return tags


def provenance(cfg: DictConfig, hydra: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the resolved, redacted config; Hydra's ``.hydra`` files) from this process's own composed config (``hydra``:
    the job's Hydra node, when it is not this process's ``HydraConfig``)."""
    from runner.tracking.sanitize import config_to_container

    task = OmegaConf.to_container(cfg, resolve=False)
    task.pop("hydra", None)
    node = hydra if hydra is not None else HydraConfig.get()
    files = {"config.yaml": task, "hydra.yaml": {
        "hydra": OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node},
             "overrides.yaml": task_overrides(hydra)}
    return config_to_container(cfg), files


def tracking_uri_for(tracking: dict[str, Any]) -> str:
    """``MLFLOW_TRACKING_URI`` overrides both ``tracking=local`` and ``tracking=server`` (DESIGN)."""
    from runner.tracking.store import resolve_tracking_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or resolve_tracking_uri(tracking.get("uri"))


def run_tracked(logger: MLflowLogger, cfg: DictConfig, prepared: Prepared | None = None, threads: int | None = None,
                *, hydra: Mapping[str, Any] | None = None, outcome: Outcome | None = None, figures: bool = True,
                tables: str = "auto",
                ) -> tuple[Prepared, Outcome]:
    """The one path of a run inside its MLflow run, for a single run and a sweep's job alike: its config first
    (a run that fails later still shows it), validation where the caller has not done it (a sweep's job, whose
    bad config must still leave a FAILED child), the computing (no MLflow), then the recorder. The run ends
    FINISHED, FAILED with the error logged, or KILLED on a signal.

    ``hydra``: the job's Hydra node where it is not this process's ``HydraConfig`` (the batch launcher's
    configurations); ``outcome``: what the caller computed already for ``prepared`` (a grid's engine pass);
    ``figures``, ``tables``: what ``log_outcome`` leaves out (a sweep's rule jobs draw no figures; a grid's
    configurations log the Parquet tables only)."""
    from runner.config.schema import typed
    from runner.evaluation.experiment import compute, prepare
    from runner.tracking.lifecycle import tracked_run
    from runner.tracking.recorder import RunExtras, log_outcome, log_run_start

    redacted, hydra_files = provenance(cfg, hydra)
    extras = RunExtras(redacted, hydra_files)
    with tracked_run(logger):
        log_run_start(logger, extras)
        if prepared is None:
            require_strategy()
            choices = (hydra if hydra is not None else HydraConfig.get())["runtime"]["choices"]
            prepared = prepare(typed(cfg), choices["data"])
        from runner.tracking.lineage import data_inputs
        from runner.tracking.queries import DATA_DIGEST_TAG

        logger.set_tags({DATA_DIGEST_TAG: prepared.book.digest()})  # the trial's identity: config hash + data
        logger.log_inputs(data_inputs(prepared))  # the same bars, stretch by stretch: the UI's Dataset column
        if threads:  # a job sharing the CPU with other jobs; numpy's BLAS too: idle threads spin and slow the rest
            from threadpoolctl import threadpool_limits

            prepared.torch_threads = threads
            logger.set_tags({"runner.threads": str(threads)})
            threadpool_limits(limits=threads, user_api="blas")
        outcome = compute(prepared) if outcome is None else outcome
        outcome.run_id, outcome.experiment_id = logger.run_id, logger.experiment_id
        log_outcome(logger, prepared, outcome, extras, figures, tables)
    return prepared, outcome


def run_single(cfg: DictConfig) -> float:
    """One experiment: validate (no MLflow run yet), run it tracked, print the summary."""
    from runner.config.schema import typed
    from runner.evaluation.experiment import prepare, summary
    from runner.tracking.local_record import RECORD_DIR, run_logger, server_lost
    from runner.tracking.queries import DATA_DIGEST_TAG
    from runner.tracking.store import check_tracking_server

    started = time.perf_counter()
    require_strategy()
    config = typed(cfg)  # composed once into typed objects; a bad value fails here, before any MLflow run
    prepared = prepare(config, HydraConfig.get().runtime.choices["data"])
    resolved = dataclasses.asdict(config)  # the plain view the run's identity (tags, config hash) is computed on
    uri = tracking_uri_for(resolved["tracking"])
    check_tracking_server(uri)
    logger = run_logger(resolved["experiment_name"], uri, run_folder() / RECORD_DIR)
    logger.start_run(resolved["run_name"] or run_title(),  # pid/host: --stale; the digest: what run_tracked tags
                     tags={**run_tags(resolved), DATA_DIGEST_TAG: prepared.book.digest()})
    prepared, outcome = run_tracked(logger, cfg, prepared)
    print(summary(outcome, prepared, uri))
    if resolved["verbose"]:
        training = outcome.training
        trainings = (outcome.walk.trainings if outcome.walk else outcome.cpcv.trainings if outcome.cpcv else
                     [training] if training else [])
        print(f"time: {time.perf_counter() - started:.1f} s for the run after composition" + (
            f", of which training {sum(t.seconds for t in trainings):.1f} s on {training.device}" if training else
            ""))
    if server_lost(uri):
        raise ServerLost(run_folder(), uri)
    return outcome.selection_value


def run(cfg: DictConfig) -> float:
    """``run_single`` with the command-line contract: one line and exit 2 for user errors, 128 + the signal's
    number on a stop (130 for Ctrl-C, 143 for SIGTERM)."""
    from runner.tracking.lifecycle import exit_status, ignore_signals, interrupted

    try:
        return run_single(cfg)
    except KeyboardInterrupt as interrupt:  # the run, if any, already ended KILLED
        ignore_signals()
        print(f"interrupted ({interrupted(interrupt)}): the run ended KILLED", file=sys.stderr)
        sys.exit(exit_status(interrupt))
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
