"""Build strategies and models from their ``_target_`` configs, with messages that name the key."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import Any


def import_target(target: str, group: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception as error:  # Hydra raises ImportError/ValueError variants depending on the failure
        raise LookupError(f"{group}._target_={target!r} cannot be imported ({error}). Point it at a class, "
                          f"e.g. strategies.momentum.Momentum.") from None


def build(config: Mapping[str, Any], group: str, **extra: Any) -> Any:
    """Instantiate ``config['_target_']`` with the other keys; unknown keys get "did you mean ...?"."""
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    target = config.get("_target_")
    if not target:
        raise ValueError(f"{group} has no _target_; set {group}._target_ to a class path.")
    cls = import_target(str(target), group)
    parameters = inspect.signature(cls).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    known = [name for name in parameters if name not in extra]
    for key in kwargs:
        if key not in parameters and not accepts_any:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {group}.{close[0]}?" if close else ""
            raise TypeError(f"{group}.{key} is not a parameter of {target}; allowed: {', '.join(known)}.{hint}")
    try:
        return cls(**kwargs, **extra)
    except TypeError as error:
        if "required positional argument" in str(error) or "missing" in str(error):
            raise TypeError(f"{group}: {error}") from None
        raise


def strategy_from_config(strategy_cfg: Mapping[str, Any]) -> Any:
    return build(strategy_cfg, "strategy")
