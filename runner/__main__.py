"""``python -m runner +strategy=NAME [overrides]``: the Hydra entry point, a fast ``--help``, and the
guards around Hydra: overrides checked before composition, a unique folder per launch, and a sweep's
parent run ended when the sweep stops with an exception.

Heavy imports (torch, mlflow, matplotlib) happen only after composition, so ``--help`` and config errors
are fast. User errors print one line and exit non-zero; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("data", "model", "trainer", "strategy", "backtest", "evaluation", "tracking", "hparams_search")
USAGE = """\
usage: python -m runner +strategy=NAME [group=option ...] [key=value ...]
       python -m runner -m +strategy=NAME key=v1,v2,...      (a sweep; the winner is reported at the end)
       python -m runner.report [--metric M] [--mode max|min] [--top K] [--sweep ID] [--json]

examples:
  python -m runner +strategy=momentum
  python -m runner +strategy=momentum model=lstm trainer.epochs=5
  python -m runner +strategy=sma_crossover model=none strategy.fast=20 strategy.slow=100
  python -m runner +strategy=momentum data=csv data.path=prices.csv backtest.commission=0.001
  python -m runner -m +strategy=momentum model=none strategy.lookback=5,20,60
"""


def render_help() -> str:
    lines = [USAGE, "config groups (conf/):"]
    for group in GROUPS:
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        if options:
            lines.append(f"  {group:<15} {', '.join(options)}")
    lines += ["", "defaults: data=sp500 model=mlp trainer=default backtest=default evaluation=holdout tracking=local "
                  "(no strategy: add +strategy=NAME)",
              "every key of a group, its meaning, unit and allowed values: python -m runner --help GROUP "
              "(top, data, model, trainer, strategy, backtest, evaluation, tracking)",
              "show a composed config: python -m runner +strategy=momentum --cfg job",
              "Hydra's own help: python -m runner --hydra-help"]
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] in (["--help"], ["-h"]) and len(sys.argv) <= 3:
    if len(sys.argv) == 3:  # --help GROUP: its keys, meanings, units and allowed values
        from runner.config.docs import render_group
        from runner.errors import UserError

        try:
            print(render_group(sys.argv[2]))
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    else:
        print(render_help())
    sys.exit(0)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        from runner.sweeps.job import run_job

        return run_job(cfg)
    from runner.pipeline import run

    return run(cfg)


def entry() -> None:
    import atexit
    import gc

    # Registered first, so it runs last: once everything else has run, the interpreter's final garbage collections
    # need not walk the ~650k objects torch, MLflow and SQLAlchemy leave (1.4 s of a default run's exit, measured).
    atexit.register(gc.freeze)
    from runner.config.overrides import check_overrides
    from runner.config.schema import register
    from runner.tracking.lifecycle import exit_status, ignore_signals, interrupted, stop_on_signals
    from runner.tracking.store import bounded_http_retries

    problem = check_overrides(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    # This launch's folder suffix. An environment variable on purpose: Hydra's run and sweep folders are
    # interpolations in conf/config.yaml (${oc.env:RUNNER_LAUNCH_ID}), resolved again in every Ray job, which gets
    # the same value through Ray's job environment (runner.sweeps.cluster.FORWARDED).
    os.environ["RUNNER_LAUNCH_ID"] = secrets.token_hex(3)
    register()
    bounded_http_retries()
    stop_on_signals()
    try:
        main()
    except KeyboardInterrupt as stop:  # a sweep stopped by a signal: its runs end KILLED, one line, 128 + signal
        from runner.sweeps.launch import end_active_sweep

        ignore_signals()
        ended = end_active_sweep(stop)
        print(f"interrupted ({interrupted(stop)}): {ended or 'nothing was running'}; no job starts after it",
              file=sys.stderr)
        sys.exit(exit_status(stop))
    except BaseException as stop:
        from runner.sweeps.launch import end_active_sweep

        end_active_sweep(stop)
        if isinstance(stop, SystemExit) and stop.code == 1 and _config_error(stop.__context__):
            sys.exit(2)  # Hydra reported a composition error (it exits 1): a user error, like the runner's own
        raise


def _config_error(error: BaseException | None) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(error, (HydraException, OmegaConfBaseException))


if __name__ == "__main__":
    entry()
