"""``python -m runner +strategy=NAME [overrides]``: one experiment; ``-m`` for a sweep.

Heavy imports (torch, mlflow, matplotlib) happen only after composition, so ``--help`` and config errors
are fast. User errors print one line and exit non-zero; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

import runner.config  # noqa: F401  (registers the schemas before composition)
from runner.cli import run_from_hydra


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run_from_hydra(cfg)


if __name__ == "__main__":
    os.environ.setdefault("RUNNER_LAUNCH_DIR", os.getcwd())
    main()
