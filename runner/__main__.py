"""``python -m runner +strategy=NAME [overrides]``: one experiment; ``-m`` for a sweep.

Heavy imports (torch, mlflow, matplotlib) happen only after composition, so ``--help`` and config errors
are fast. User errors print one line and exit non-zero; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.argv[1:] in (["--help"], ["-h"]):
    from runner.help import render

    print(render())
    sys.exit(0)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import runner.config  # noqa: E402, F401  (registers the schemas before composition)
from runner.cli import run_from_hydra  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run_from_hydra(cfg)


if __name__ == "__main__":
    os.environ.setdefault("RUNNER_LAUNCH_DIR", os.getcwd())
    main()
