"""The project's Hydra launcher plugin, ``hydra/launcher=batch`` (``runner.sweeps.batch`` does the work)."""
