"""Building components from config: schema dataclasses from config nodes, and classes from their YAML's
``_target_`` (strategies, models, data sources, evaluations) after checking every key against the constructor.
Hydra is imported only when used."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from runner.errors import ConfigError, ConfigTypeError, NotFoundError

HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def from_schema(schema: type, values: Mapping[str, Any], group: str) -> Any:
    """A schema dataclass from a config node; an unknown key is named with every allowed one."""
    allowed = [f.name for f in dataclasses.fields(schema)]
    for key in values:
        if key not in allowed:
            raise ConfigTypeError(unknown_key_message(group, key, allowed))
    return schema(**values)


def unknown_key_message(group: str, key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean {group}.{close[0]}?" if close else ""
    return f"{group}.{key} is not a known key; allowed: {', '.join(allowed) or '(none)'}.{hint}"


def names_the_target(cause: BaseException, target: str) -> bool:
    """Whether an import failure is about the ``_target_`` path itself (a module or attribute along it is missing),
    not raised by code inside a module that exists (a missing dependency or an ``AttributeError`` there is a bug in
    that module, to be shown with its traceback)."""
    parts = target.split(".")
    if isinstance(cause, ModuleNotFoundError):
        return cause.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return isinstance(cause, AttributeError) and getattr(cause, "name", None) in parts


def import_target(target: str, group: str) -> Any:
    from hydra.utils import get_object

    try:
        return get_object(target)
    except (ImportError, ValueError) as error:  # Hydra wraps every failure in one of these
        cause = error.__cause__
        if cause is not None and not names_the_target(cause, target):
            raise cause from None  # the module exists but raised while importing: a bug in it, with its traceback
        raise NotFoundError(f"{group}._target_={target!r} cannot be imported ({error}). Point it at a class, "
                            f"e.g. strategies.momentum.Momentum.") from None


def check_arguments(config: Mapping[str, Any], group: str, supplied: tuple[str, ...] = (),
                    shared: tuple[str, ...] = ()) -> Any:
    """The ``_target_`` class, after checking every key against its constructor ("did you mean ...?").

    ``supplied`` names the arguments the runner passes itself (e.g. ``n_features``): not config keys;
    ``shared`` the group's keys the runner applies itself (listed as allowed, never passed).
    """
    target = config.get("_target_")
    if not target:
        raise ConfigError(f"{group} has no _target_; set {group}._target_ to a class path.")
    cls = import_target(str(target), group)
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return cls
    allowed = [name for name in parameters if name not in supplied] + list(shared)
    for key in config:
        if key not in HYDRA_KEYS and key not in parameters:
            raise ConfigTypeError(unknown_key_message(group, key, allowed))
    return cls


def build(config: Mapping[str, Any], group: str, shared: tuple[str, ...] = (), **supplied: Any) -> Any:
    """Instantiate ``config['_target_']`` with its keys plus ``supplied``; a missing argument names the key."""
    cls = check_arguments(config, group, tuple(supplied), shared)
    kwargs = {k: v for k, v in config.items() if k not in HYDRA_KEYS}
    try:
        return cls(**kwargs, **supplied)
    except TypeError as error:
        if "required positional argument" in str(error) or "missing" in str(error):
            raise ConfigTypeError(f"{group}: {error}") from None
        raise


def model_factory(config: Mapping[str, Any]) -> Any:
    """The network's constructor with its config keys bound (``_partial_: true``), awaiting ``n_features``."""
    check_arguments(config, "model", ("n_features",))
    if config.get("_partial_") is not True:
        raise ConfigError("model._partial_ must be true: the network is built once the number of features is known "
                         "(add `_partial_: true` to the model's YAML).")
    from hydra.utils import instantiate

    return instantiate(dict(config), _convert_="all")
