"""The backtest engine: target weights in, returns, equity, trades and metrics out (pure numpy/pandas).

``ENGINE_VERSION`` is bumped whenever a change alters what a logged metric means; every run is tagged
with it (``runner.engine_version``) and the README's changelog says what each bump changed. Runs logged
before the tag existed count as version 1.
"""

ENGINE_VERSION = 2
