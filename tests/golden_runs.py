"""The golden runs of the second redesign: fixed configurations whose full metrics are pinned in
``tests/golden/*.json`` (computed before the redesign; a refactor must reproduce them to 1e-9).

``python -m tests.golden_runs --write`` rewrites the files (only when a change is meant to move numbers).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
RUNS: dict[str, list[str]] = {
    "rule_sp500": ["+strategy=sma_crossover", "model=none"],
    "rule_nasdaq": ["+strategy=mean_reversion", "model=none", "data=nasdaq", "backtest.rebalance=weekly"],
    "universe": ["+strategy=xs_momentum", "model=none", "data=bundled_universe", "backtest.rebalance=5"],
    "walk_forward_rule": ["+strategy=momentum", "model=none", "evaluation=walk_forward", "evaluation.folds=4"],
    "walk_forward_linear": ["+strategy=momentum", "model=linear", "trainer.epochs=2", "evaluation=walk_forward",
                            "evaluation.folds=3", "data.start=2010-01-01"],
    "linear_model": ["+strategy=momentum", "model=linear", "trainer.epochs=3", "data.start=2012-01-01", "seed=7"],
}


def golden_metrics(overrides: list[str]) -> dict[str, float]:
    """A run's metrics as its recorder logs them, computed without MLflow (walk-forward: also per fold)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config.schema import register
    from runner.evaluation.experiment import compute, prepare

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    outcome = compute(prepare(OmegaConf.to_container(cfg, resolve=True)))
    metrics = dict(outcome.result.flat_metrics())
    if outcome.walk is not None:
        for name, values in outcome.walk.fold_metrics.items():
            metrics.update({f"fold{k}_{name}": v for k, v in enumerate(values)})
    return {k: float(v) for k, v in metrics.items()}


def differences(expected: dict[str, float], got: dict[str, float], tol: float = 1e-9) -> list[str]:
    out = [f"missing {k}" for k in expected if k not in got] + [f"new {k}" for k in got if k not in expected]
    for key, value in expected.items():
        other = got.get(key)
        if other is None or (math.isnan(value) and math.isnan(other)):
            continue
        if not math.isclose(value, other, rel_tol=tol, abs_tol=tol):
            out.append(f"{key}: {value!r} -> {other!r}")
    return out


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.mkdir(exist_ok=True)
    for name, overrides in RUNS.items():
        (GOLDEN / f"{name}.json").write_text(json.dumps(golden_metrics(overrides), indent=1, sort_keys=True) + "\n")
        print("wrote", name)
