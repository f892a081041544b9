"""The file MLflow's models-from-code runs to load a registered strategy (``runner.serving.strategy.StrategyModel``):
code, not a pickle, so it loads with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``."""

from mlflow.models import set_model

from runner.serving.strategy import StrategyModel

set_model(StrategyModel())
