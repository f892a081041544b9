"""User errors and bugs: a user's mistake is one line and exit 2; a bug in a user's strategy is its traceback,
exit 1 and a FAILED run (a ``KeyError`` inside ``signal()`` is not a user error)."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import run_cli

BUGGY = '''\
import numpy as np
import pandas as pd

from runner.errors import ConfigError
from strategies.base import Strategy


class Buggy(Strategy):
    def __init__(self, window: int = 5) -> None:
        if window < 2:
            raise ConfigError(f"strategy.window must be >= 2, got {window}.")
        self.window = window

    @property
    def warmup(self) -> int:
        return self.window

    def signal(self, bars: pd.DataFrame) -> np.ndarray:
        return np.full(len(bars), {"a": 1.0}["missing_key"])
'''


def _user_package(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    (tmp_path / "my_strategies").mkdir()
    (tmp_path / "my_strategies" / "buggy.py").write_text(BUGGY)
    (tmp_path / "conf" / "strategy").mkdir(parents=True)
    (tmp_path / "conf" / "strategy" / "buggy.yaml").write_text("_target_: my_strategies.buggy.Buggy\nwindow: 5\n")
    return {**env, "PYTHONPATH": f"{tmp_path}:{env['PYTHONPATH']}"}, f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_a_bug_in_a_strategy_shows_its_traceback_exits_1_and_fails_the_run(tmp_path: Path, cli_env: dict,
                                                                            tracking_uri: str) -> None:
    env, searchpath = _user_package(tmp_path, cli_env)
    done = run_cli(["runner", "+strategy=buggy", "model=none", searchpath, "data=synthetic"], env, tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" in done.stderr and "KeyError: 'missing_key'" in done.stderr
    assert "buggy.py" in done.stderr and "in signal" in done.stderr  # the user's own frame is shown
    client = MlflowClient(tracking_uri)
    [run] = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])
    assert run.info.status == "FAILED" and "KeyError" in run.data.tags["error"]


def test_a_strategys_own_parameter_check_is_a_user_error(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    env, searchpath = _user_package(tmp_path, cli_env)
    done = run_cli(["runner", "+strategy=buggy", "model=none", searchpath, "strategy.window=1"], env, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == "error: strategy.window must be >= 2, got 1."


def test_a_bug_in_one_sweep_job_fails_that_child_with_its_traceback(tmp_path: Path, cli_env: dict,
                                                                     tracking_uri: str) -> None:
    env, searchpath = _user_package(tmp_path, cli_env)
    done = run_cli(["runner", "-m", "+strategy=buggy,momentum", "model=none", searchpath, "data=synthetic",
                    "sweep_name=bugs"], env, tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "KeyError: 'missing_key'" in done.stderr and "Traceback" in done.stderr
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id],
                              filter_string="tags.sweep_name = 'bugs'")
    statuses = sorted((r.data.tags["strategy"], r.info.status) for r in runs if "job_number" in r.data.tags)
    assert statuses == [("buggy", "FAILED"), ("momentum", "FINISHED")]


def test_a_module_that_raises_while_importing_is_a_bug_not_a_missing_target(tmp_path: Path,
                                                                             monkeypatch) -> None:
    import pytest

    from runner.config.build import import_target
    from runner.errors import NotFoundError

    (tmp_path / "broken_strategies.py").write_text('SETTINGS = {}["missing_key"]\n\n\nclass Broken:\n    pass\n')
    (tmp_path / "fine_strategies.py").write_text("class Fine:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyError, match="missing_key"):  # the user's own error, not "cannot be imported"
        import_target("broken_strategies.Broken", "strategy")
    with pytest.raises(NotFoundError, match="strategy._target_='fine_strategies.Nope' cannot be imported"):
        import_target("fine_strategies.Nope", "strategy")
    # an AttributeError or a missing dependency inside a module that exists is its bug, not a missing target
    (tmp_path / "attr_strategies.py").write_text("SETTINGS = None.items\n\n\nclass Broken:\n    pass\n")
    (tmp_path / "dep_strategies.py").write_text("import not_installed_dep_xyz\n\n\nclass Broken:\n    pass\n")
    with pytest.raises(AttributeError, match="items"):
        import_target("attr_strategies.Broken", "strategy")
    with pytest.raises(ModuleNotFoundError, match="not_installed_dep_xyz"):
        import_target("dep_strategies.Broken", "strategy")
    for missing in ("no_such_module_xyz.Strategy", "fine_strategies.Fine.deeper"):
        with pytest.raises(NotFoundError, match="cannot be imported"):
            import_target(missing, "strategy")
