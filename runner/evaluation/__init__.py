"""How a run is judged: holdout segments or walk-forward folds over one backtest."""
