"""Checks the command line's ``key=value`` overrides before Hydra composes: keys that moved, and unknown
keys named with every allowed one (Hydra alone says only that a key "is not in struct")."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import yaml

from runner.config.build import HYDRA_KEYS, unknown_key_message
from runner.config.schema import SCHEMAS, StrategyRules, TrainerConf

CONF = Path(__file__).resolve().parents[2] / "conf"
TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(TrainerConf))
DEFAULT_OPTIONS = {"model": "mlp"}


def _option_keys(group: str, option: str) -> list[str] | None:
    """The keys a group option's YAML defines (None when the option does not exist: Hydra says so)."""
    path = CONF / group / f"{option}.yaml"
    if not path.is_file():
        return None
    text = path.read_text()
    content = yaml.safe_load(text) or {}
    if text.lstrip().startswith("# @package _global_"):
        content = content.get(group) or {}
    keys = [k for k in content if k not in HYDRA_KEYS and k != "defaults"]
    if group == "strategy":
        keys += [f.name for f in dataclasses.fields(StrategyRules)]
    return keys


def _chosen(args: list[str], group: str) -> list[str]:
    """The options of ``group`` the command selects (the last ``group=...`` wins, as in Hydra)."""
    for arg in reversed(args):
        key, _, value = arg.partition("=")
        if key.lstrip("+~") == group and value:
            return [v for v in value.split(",") if v]
    default = DEFAULT_OPTIONS.get(group)
    return [default] if default else []


def _unknown_option_key(args: list[str], group: str, key: str, leaf: str, value: str) -> str | None:
    for option in _chosen(args, group):
        allowed = _option_keys(group, option)
        if allowed is not None and leaf not in allowed:
            message = unknown_key_message(group, leaf, allowed)
            message = message.replace(" is not a known key", f" is not a key of {group}={option}")
            message += f" To pass a constructor argument that the YAML lacks, use +{key}={value}."
            if group == "model":
                close = difflib.get_close_matches(leaf, TRAINING_KEYS, n=1)
                message += f" Training keys are under trainer: {', '.join(TRAINING_KEYS)}."
                message += f" Did you mean trainer.{close[0]}?" if close else ""
            return message
    return None


def _unknown_option(key: str, value: str) -> str | None:
    """``group=option`` (or a comma-separated sweep of options) naming an option the group does not have."""
    folder = CONF / key
    if not folder.is_dir() or "$" in value or value.startswith(("choice(", "range(", "glob(")):
        return None
    options = sorted(p.stem for p in folder.glob("*.yaml"))
    missing = [v for v in value.split(",") if v and v not in options]
    if missing:
        return f"{key}={missing[0]} is not an option of {key}; allowed: {', '.join(options)}."
    return None


def check_overrides(args: list[str]) -> str | None:
    """A one-line message for the first override that cannot work, else None. With config folders of the
    user's own (``hydra.searchpath``), group options are left to Hydra (whose errors also exit 2)."""
    own_configs = any(arg.lstrip("+~").startswith("hydra.searchpath") for arg in args)
    for arg in args:
        raw_key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-"):
            continue
        key = raw_key.lstrip("+~")
        if "." not in key and "/" not in key and not raw_key.startswith("~"):
            problem = None if own_configs else _unknown_option(key, value)
            if problem:
                return problem
            continue
        group, _, leaf = key.partition(".")
        if not leaf or "." in leaf or group == "hydra":
            continue
        if group == "model" and leaf in TRAINING_KEYS:
            return f"{key} has moved to the trainer group: use trainer.{leaf}={value}"
        if group in SCHEMAS:
            allowed = [f.name for f in dataclasses.fields(SCHEMAS[group])]
            if leaf not in allowed:
                return unknown_key_message(group, leaf, allowed)
        elif group in ("model", "strategy") and not raw_key.startswith(("+", "~")):
            problem = _unknown_option_key(args, group, key, leaf, value)
            if problem:
                return problem
    return None
