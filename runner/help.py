"""A fast ``python -m runner --help``: Hydra's own help composes every group option (1-2 s)."""

from __future__ import annotations

from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ("data", "model", "strategy", "backtest", "tracking", "hparams_search")

USAGE = """\
usage: python -m runner +strategy=NAME [group=option ...] [key=value ...]
       python -m runner -m +strategy=NAME key=v1,v2,...      (a sweep; the winner is reported at the end)
       python -m runner.report [--metric M] [--mode max|min] [--top K] [--sweep ID] [--json]

examples:
  python -m runner +strategy=momentum
  python -m runner +strategy=sma_crossover model=none strategy.fast=20 strategy.slow=100
  python -m runner +strategy=momentum data=csv data.path=prices.csv backtest.commission=0.001
  python -m runner -m +strategy=momentum model=none strategy.lookback=5,20,60
"""


def render() -> str:
    lines = [USAGE, "config groups (conf/):"]
    for group in GROUPS:
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        if options:
            lines.append(f"  {group:<15} {', '.join(options)}")
    lines += ["", "defaults: data=sp500 model=mlp backtest=default tracking=local (no strategy: add +strategy=NAME)",
              "show a composed config: python -m runner +strategy=momentum --cfg job",
              "Hydra's own help: python -m runner --hydra-help"]
    return "\n".join(lines)
