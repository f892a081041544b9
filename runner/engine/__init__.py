"""The backtest engine: target weights in, returns, equity, trades and metrics out (pure numpy/pandas)."""
