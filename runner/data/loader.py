"""The data boundary: build the configured source from ``data._target_``, load its bars, check what it returned,
and apply what every source shares (``start``/``end``, and a universe's alignment with ``max_fill``). The only
place, with the messages that name a universe, that tells a series from a universe. Pure: no MLflow, no Hydra.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from runner.config.build import build, from_schema
from runner.config.schema import DataRules, UniverseRules
from runner.data.series import normalise_ohlcv, trim
from runner.data.universe import Universe, align, check_spacings, resample
from runner.errors import DataError

if TYPE_CHECKING:
    from typing import Protocol

    class DataSource(Protocol):
        def load(self) -> pd.DataFrame | Mapping[str, pd.DataFrame]: ...

SHARED = tuple(f.name for f in dataclasses.fields(DataRules))
UNIVERSE_SHARED = tuple(f.name for f in dataclasses.fields(UniverseRules))


def split_rules(config: Mapping[str, Any]) -> tuple[DataRules, dict[str, Any], dict[str, Any]]:
    """(the shared rules, a universe's rules as given, the source's own keys)."""
    rules = from_schema(DataRules, {k: v for k, v in config.items() if k in SHARED}, "data")
    universe = {k: v for k, v in config.items() if k in UNIVERSE_SHARED}
    own = {k: v for k, v in config.items() if k not in SHARED and k not in UNIVERSE_SHARED}
    return rules, universe, own


def load_data(config: Mapping[str, Any], choice: str = "data") -> Universe:
    """The book's data: a universe aligned on the union of its timestamps, or a single series as the one-column
    case (``Universe.from_series``), both trimmed to ``data.start``/``data.end``. ``choice`` names the data option
    in messages (and a series' one asset)."""
    rules, universe_keys, own = split_rules(config)
    source: DataSource = build(own, "data", shared=(*SHARED, *UNIVERSE_SHARED))
    loaded = source.load()
    if isinstance(loaded, pd.DataFrame):
        if universe_keys:
            raise DataError(f"data.{next(iter(universe_keys))} applies to universes only, but data={choice} is a "
                            "single series; remove it.")
        return Universe.from_series(trim(normalise_ohlcv(loaded, f"data={choice}"), rules.start, rules.end),
                                    getattr(source, "name", choice))
    if not isinstance(loaded, Mapping):
        raise TypeError(f"{type(source).__name__}.load() returned {type(loaded).__name__}; a data source returns an "
                        "OHLCV DataFrame (a series) or a {symbol: OHLCV DataFrame} mapping (a universe).")
    universe = from_schema(UniverseRules, universe_keys, "data")
    if universe.resample:
        try:
            pd.tseries.frequencies.to_offset(universe.resample)
        except ValueError:
            raise DataError(f"data.resample={universe.resample!r} is not a frequency; allowed: null or a pandas "
                            "offset such as 1D, 1h, 1W.") from None
    name = getattr(source, "name", choice)
    frames = {}
    for symbol, frame in loaded.items():
        frame = normalise_ohlcv(frame, f"data={choice} symbol {symbol!r}")
        if universe.resample:
            frame = resample(frame, universe.resample)
        try:
            frames[str(symbol)] = trim(frame, rules.start, rules.end)
        except DataError as error:
            if "no bars between" not in str(error):
                raise
    check_spacings(frames, name)
    return align(frames, universe.max_fill, name)
