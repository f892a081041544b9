"""``python -m runner.signal MODEL_URI [data=... data.path=...]``: what a registered strategy holds after the latest
bar, for a cron job.

    python -m runner.signal models:/momentum@champion data=csv data.path=examples/prices.csv [--json] [--tracking-uri U]

The data options are a run's (Hydra composes them from ``conf/``, so ``data.start``, ``data.max_fill`` and a user's
own source work as in a run); the model is loaded with pickle deserialisation off and given the raw bars. It prints
the bar the weights follow and one weight per asset (a series: one). Exit 2 with one line for a bad data option or
a model that is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from runner.errors import ConfigError, NotFoundError, UserError

if TYPE_CHECKING:
    import pandas as pd

    from runner.data.universe import Universe

ALLOWED = ("data", "data.", "seed=")  # the overrides a signal takes: the data options (and the generators' seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runner.signal",
                                     description="What a registered strategy holds after the latest bar of the bars "
                                                 "the data options give (the strategy travels in the model).")
    parser.add_argument("model_uri", metavar="MODEL_URI", help="e.g. models:/NAME@champion or models:/NAME/3")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="data options as for a run, e.g. data=csv data.path=examples/prices.csv (default: "
                             "data=sp500)")
    parser.add_argument("--json", action="store_true", help="print JSON: the bar and the weights")
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else ./outputs/mlflow.db")
    return parser.parse_args(argv)


def load_bars(overrides: list[str]) -> Universe:
    """The bars the data options give, composed and loaded as a run loads them."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from runner.config.overrides import CONF, check_overrides
    from runner.config.schema import register
    from runner.data.loader import load_data

    for override in overrides:
        if not override.lstrip("+~").startswith(ALLOWED):
            raise ConfigError(f"{override!r}: runner.signal takes data options only (data=NAME, data.KEY=VALUE, "
                              "seed=N); the strategy and its settings travel in the model.")
    problem = check_overrides(overrides)
    if problem:
        raise ConfigError(problem)
    register()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides, return_hydra_config=True)
        choice = str(cfg.hydra.runtime.choices.data)
        data = OmegaConf.to_container(cfg.data, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(str(error).splitlines()[0]) from None
    return load_data(data, choice)


def latest(model_uri: str, bars: pd.DataFrame, tracking_uri: str | None) -> pd.DataFrame:
    """The served weights of the last bar (one row per asset)."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from runner.tracking.store import resolve_tracking_uri

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except MlflowException as error:
        raise NotFoundError(f"{model_uri}: no such model ({str(error).splitlines()[0][:200]}); register one with "
                            "python -m runner.report --register NAME --alias champion") from None
    weights = model.predict(bars)
    return weights[weights["date"] == weights["date"].max()].reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from runner.serving.strategy import long_bars

        book = load_bars(args.overrides)
        held = latest(args.model_uri, long_bars(book), args.tracking_uri)
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    after = held["date"].iloc[0]
    symbols = held["symbol"].tolist() if "symbol" in held else [book.name]
    weights = dict(zip(symbols, held["weight"].astype(float).tolist(), strict=True))
    if args.json:
        print(json.dumps({"model_uri": args.model_uri, "after_bar": str(after), "bars": len(book.index),
                          "weights": weights}, indent=2))
        return 0
    print(f"{args.model_uri}: hold after the close of {after} (bar {len(book.index)} of {book.name}):")
    width = max(len(s) for s in weights)
    for symbol, weight in weights.items():
        print(f"  {symbol:<{width}}  {weight:+.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
