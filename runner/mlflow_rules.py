"""MLflow's rules for keys and values, checked here before anything is sent (pure: no MLflow import).

MLflow would otherwise truncate long params, store inf as 1.8e308, stringify numpy values, or fail deep
inside a batch with a message that does not name the key.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Any

from runner.params import to_jsonable

# MLflow's limits (mlflow/utils/validation.py), named once here.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
_KEY_PATTERN = re.compile(r"^[/\w.\- :]+$")
LONG_PARAMS_ARTIFACT = "params/long_params.json"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


def validate_key(key: Any, kind: str) -> str:
    """Check a param/metric/tag key against MLflow's rules, with a message that says how to fix it."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"{kind} key {key!r} must be a non-empty string.")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"{kind} key {key[:40]!r}... is {len(key)} chars; MLflow allows {MAX_KEY_LENGTH}.")
    if not _KEY_PATTERN.match(key) or key.startswith("/") or ".." in key.split("/"):
        raise ValueError(
            f"{kind} key {key!r} is not valid in MLflow: use letters, digits, '_', '-', '.', ' ', ':' or '/' "
            "(e.g. 'val_sharpe_ratio', not 'val sharpe %')."
        )
    return key


def param_text(value: Any) -> str:
    """One param value as MLflow text: JSON for containers, plain str for scalars."""
    plain = to_jsonable(value)
    if isinstance(plain, (dict, list)):
        return json.dumps(plain, sort_keys=True, allow_nan=False)
    return "None" if plain is None else str(plain)


def metric_value(key: str, value: Any) -> float:
    """A metric as float; inf is mapped to NaN (MLflow would store 1.8e308, winning every max search)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__} {value!r}.")
    number = float(value)
    if math.isinf(number):
        warnings.warn(f"metric {key!r} is {number}; logged as NaN so it can never win a search.",
                      stacklevel=3)
        return math.nan
    return number


def safe_artifact_path(path: str) -> str:
    """Artifact paths from config stay inside the run's artifact root."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"artifact path {path!r} must be a non-empty relative path.")
    normalised = os.path.normpath(path).replace(os.sep, "/")
    if os.path.isabs(path) or normalised == ".." or normalised.startswith("../") or ":" in normalised:
        raise ValueError(f"artifact path {path!r} must stay inside the run's artifact root "
                         "(relative, no '..', no drive or scheme).")
    return normalised
