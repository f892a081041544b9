"""The house's shape: imports run downwards with no cycles, Hydra's plugins are Hydra's own, and adding a
strategy takes one module plus one YAML (the README's example, run through the CLI)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT, run_cli

# Lower layers never import higher ones; pure compute sits at the bottom, entry modules on top.
LAYERS = [
    ("runner.errors",),
    ("runner.config.schema", "runner.config.build", "runner.stats", "runner.bootstrap"),
    ("runner.data", "runner.config.docs", "runner.engine", "runner.ml", "runner.views.figures",
     "runner.views.tearsheet", "strategies"),
    ("runner.tracking",),
    ("runner.evaluation", "runner.logger", "runner.serving"),
    ("runner.pipeline", "runner.sweeps", "runner.report", "runner.views.report_table", "runner.sync", "runner.clean",
     "runner.config.overrides", "runner.signal", "runner.__main__"),
]
PURE = ("runner.errors", "runner.config.schema", "runner.config.build", "runner.stats", "runner.bootstrap",
        "runner.data", "runner.config.docs", "runner.engine", "runner.ml", "runner.views.figures",
        "runner.views.tearsheet", "strategies")
PACKAGES = ("config", "data", "engine", "evaluation", "ml", "serving", "sweeps", "tracking", "views")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module imported anywhere in the file, lazy (function-level) imports included; imports under
    ``if TYPE_CHECKING:`` are annotations only (never executed), so a lower layer may name a higher one's types."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def project_graph() -> dict[str, set[str]]:
    files = sorted((ROOT / "runner").rglob("*.py")) + sorted((ROOT / "strategies").rglob("*.py"))
    modules = {module_name(f): f for f in files}
    return {name: {i for i in imports_of(path) if i in modules and i != name} for name, path in modules.items()}


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_imports_only_run_downwards() -> None:
    packages = {"runner", *(f"runner.{p}" for p in PACKAGES)}
    upward = [f"{m} -> {i}" for m, targets in project_graph().items() if m not in packages
              for i in targets if layer_of(i) > layer_of(m)]
    assert not upward, upward


def test_there_are_no_import_cycles() -> None:
    graph = project_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, cycles


def test_pure_modules_import_neither_mlflow_nor_hydra_at_module_level() -> None:
    for path in sorted((ROOT / "runner").rglob("*.py")) + sorted((ROOT / "strategies").rglob("*.py")):
        if not module_name(path).startswith(PURE):
            continue
        top = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        heavy = {n for n in names if n.split(".")[0] in ("mlflow", "hydra", "omegaconf")}
        assert not heavy, f"{module_name(path)} imports {heavy} at module level"


HYDRA_PLUGIN_NAMES = {"basic", "joblib", "ray", "ray_aws", "rq", "submitit_local", "submitit_slurm", "optuna", "ax",
                      "nevergrad"}


def test_hydras_plugins_are_hydras_own() -> None:
    """Nothing replaces a Hydra sweeper or launcher under Hydra's name: the project's own plugins (the batch
    launcher, the grid sweeper) live in their own packages of Hydra's ``hydra_plugins`` namespace (no
    ``__init__.py`` there, as Hydra documents) and register names of their own, which Hydra's plugin discovery
    finds."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    assert not (ROOT / "hydra_plugins" / "__init__.py").exists()
    assert sorted(p.name for p in (ROOT / "hydra_plugins").iterdir() if p.is_dir() and p.name != "__pycache__") == [
        "runner_batch_launcher", "runner_grid_sweeper"]
    assert {"BasicLauncher", "BatchLauncher"} <= {p.__name__ for p in Plugins.instance().discover(Launcher)}
    assert {"BasicSweeper", "GridSweeper"} <= {p.__name__ for p in Plugins.instance().discover(Sweeper)}
    for group, name in (("launcher", "batch"), ("sweeper", "grid")):
        ours = [key.removesuffix(".yaml") for key, node in ConfigStore.instance().repo["hydra"][group].items()
                if getattr(node, "provider", None) == "trading-runner"]  # (a dict: a nested group)
        assert ours == [name] and not set(ours) & HYDRA_PLUGIN_NAMES
    shadows = [p for p in (ROOT / "conf").glob("hydra/*/*.yaml") if p.stem in HYDRA_PLUGIN_NAMES]
    assert not shadows, shadows


def test_every_module_says_what_it_owns() -> None:
    for path in sorted((ROOT / "runner").rglob("*.py")) + sorted((ROOT / "strategies").rglob("*.py")):
        if path.name == "__init__.py" and path.parent.name == "strategies":
            continue
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring"


def test_runner_keeps_its_entry_points_and_one_subpackage_per_concern() -> None:
    top = sorted(p.stem for p in (ROOT / "runner").glob("*.py"))
    assert len(top) <= 11, top  # the entry points (__main__, report, signal, sync, clean) and the shared bottom
    assert sorted(p.name for p in (ROOT / "runner").iterdir() if (p / "__init__.py").is_file()) == sorted(PACKAGES)


def readme_example(section_title: str, module_path: str, yaml_path: str) -> tuple[str, str, str]:
    """A README "Adding a ..." section's module, YAML and command (the first of each, by their path comments)."""
    section = (ROOT / "README.md").read_text().split(f"## {section_title}", 1)[1].split("\n## ", 1)[0]
    module = re.search(rf"```python\n(# {re.escape(module_path)}\n.*?)```", section, re.S).group(1)
    config = re.search(rf"```yaml\n(# {re.escape(yaml_path)}\n.*?)```", section, re.S).group(1)
    command = re.search(r"```bash\n(python -m runner .*?)\n```", section, re.S).group(1)
    return module, config, command


def test_the_readme_strategy_example_runs_through_the_cli(tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    module, config, command = readme_example("Adding a strategy", "my_strategies/breakout.py",
                                             "conf/strategy/breakout.yaml")
    assert len(module.splitlines()) + len(config.splitlines()) <= 25
    (tmp_path / "my_strategies").mkdir()
    (tmp_path / "my_strategies" / "breakout.py").write_text(module)
    (tmp_path / "conf" / "strategy").mkdir(parents=True)
    (tmp_path / "conf" / "strategy" / "breakout.yaml").write_text(config)
    args = command.split()[2:]  # after "python -m"
    env = {**cli_env, "PYTHONPATH": f"{tmp_path}:{cli_env['PYTHONPATH']}"}
    done = run_cli([*args, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "data.start=2012-01-01"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.tags["strategy"] == "breakout"
    assert run.data.params["strategy.window"] == "20" and run.data.params["strategy.long_only"] == "False"
    assert run.data.metrics["test_num_trades"] > 0


def test_the_readme_data_source_example_runs_through_the_cli(tmp_path: Path, cli_env: dict,
                                                             tracking_uri: str) -> None:
    """One module and one YAML from the user's own folder, a key overridden on the command line."""
    module, config, command = readme_example("Adding a data source", "my_data/mean_reverting.py",
                                             "conf/data/mean_reverting.yaml")
    (tmp_path / "my_data").mkdir()
    (tmp_path / "my_data" / "mean_reverting.py").write_text(module)
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "mean_reverting.yaml").write_text(config)
    args = command.split()[2:]
    assert "data.theta=0.2" in args
    env = {**cli_env, "PYTHONPATH": f"{tmp_path}:{cli_env['PYTHONPATH']}"}
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    done = run_cli([*args, searchpath], env, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.tags["data"] == "mean_reverting"
    assert run.data.params["data.theta"] == "0.2" and run.data.params["data.n_bars"] == "1500"
    assert run.data.params["data.seed"] == "42" and run.data.metrics["test_num_trades"] > 0
    bad = run_cli([*args[:-1], "data.theta=2", searchpath], env, tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: data.theta must be in (0, 1), got 2."
