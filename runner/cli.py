"""The Hydra task: turn the composed config into one tracked run (or one sweep job)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

USER_ERRORS = (ValueError, TypeError, LookupError)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def available(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    return sorted(loader.get_group_options(group))


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
    """Identity of an experiment's settings (for resuming sweeps): everything but naming/tracking."""
    relevant = {k: v for k, v in resolved.items()
                if k not in ("run_name", "sweep_name", "resume", "tracking", "experiment_name")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _raw_overrides(hydra_cfg: Any) -> list[str]:
    """The task overrides as typed (reading them through OmegaConf would resolve ``${oc.env:..}``)."""
    return [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]


def run_tags(cfg: DictConfig, resolved: dict[str, Any]) -> dict[str, str]:
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    tags = {"strategy": str(choices.get("strategy")), "model": str(choices.get("model")),
            "data": str(choices.get("data")), "overrides": " ".join(_raw_overrides(hydra_cfg)),
            "argv": " ".join(sys.argv), "config_hash": config_hash(resolved),
            "runner.host": socket.gethostname(), "runner.pid": str(os.getpid())}
    tags.update(git_tags())
    return tags


def tracking_uri_for(resolved: dict[str, Any]) -> str:
    """``MLFLOW_TRACKING_URI`` overrides both ``tracking=local`` and ``tracking=server`` (DESIGN)."""
    from runner.store import resolve_tracking_uri

    return os.environ.get("MLFLOW_TRACKING_URI") or resolve_tracking_uri(resolved["tracking"].get("uri"))


def run_single(cfg: DictConfig) -> float:
    """One experiment: validate (no MLflow run yet), run it tracked, print the summary."""
    from runner.experiment import execute, prepare, summary
    from runner.params import config_to_container

    if cfg.get("strategy") is None:
        raise LookupError(f"no strategy given: add +strategy=NAME, one of: {', '.join(available('strategy'))}")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    prepared = prepare(resolved)
    uri = tracking_uri_for(resolved)
    from runner.health import check_tracking_server
    from runner.lifecycle import tracked_run
    from runner.logger import MLflowLogger
    from runner.run_logging import RunExtras, log_run_start

    check_tracking_server(uri)
    logger = MLflowLogger(resolved["experiment_name"], uri)
    hydra_cfg = HydraConfig.get()
    extras = RunExtras(config_to_container(cfg), Path(hydra_cfg.runtime.output_dir) / hydra_cfg.output_subdir,
                       run_tags(cfg, resolved))
    logger.start_run(resolved.get("run_name"))
    with tracked_run(logger):
        log_run_start(logger, extras)
        outcome = execute(prepared, logger, extras)
    print(summary(outcome, prepared, uri))
    return outcome.selection_value


def run_from_hydra(cfg: DictConfig) -> float | None:
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        from runner.sweep import run_job

        return run_job(cfg)
    try:
        return run_single(cfg)
    except KeyboardInterrupt as interrupt:  # the run, if any, already ended KILLED
        print(f"interrupted ({str(interrupt) or 'received SIGINT (Ctrl-C)'}): the run ended KILLED", file=sys.stderr)
        sys.exit(130)
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
