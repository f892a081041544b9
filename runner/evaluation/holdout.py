"""``evaluation=holdout``: one chronological train/val/test split of one backtest (``data.splits``); a model fits on
train, early-stops on val, and test is the out-of-sample segment."""

from __future__ import annotations


class HoldoutEvaluation:
    """The default evaluation: no folds; the segments are ``data.splits`` of the bars."""

    def layout(self, n_bars: int, with_model: bool, min_train: int) -> None:
        """No folds: the run is judged on its train/val/test segments."""
        return None
