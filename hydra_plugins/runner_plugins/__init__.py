"""Hydra plugins of the runner: found by Hydra's scan of the ``hydra_plugins`` namespace package.

Hydra imports every module here when any Hydra app starts, so these modules import only Hydra and OmegaConf; the work
is done in ``runner.launcher`` and ``runner.composed``.
"""
