"""``hydra/sweeper=grid``, the default sweeper: the basic sweeper's jobs, order and batches, checked before any job
runs by composing a covering set of jobs (Hydra's own sweeper as the reference)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from hydra_plugins.runner_grid_sweeper.grid_sweeper import cover, free_keys, grid, shape_groups
from tests.conftest import run_cli

SWEEPS = [
    ["strategy.fast=range(5,25)", "strategy.slow=range(30,230,10)"],
    ["+strategy=momentum,sma_crossover", "model=none", "seed=1,2,3"],
    ["a=1,2", "b=x", "a=3,4,5", "c=choice(p,q)", "d='x,y'", "e=[1,2]", "f=range(0,1,0.25)"],  # a key twice
    ["~model", "+x=1,2", "++y=3,4", "z=null"],
    [],
]


@pytest.mark.parametrize("arguments", SWEEPS)
@pytest.mark.parametrize("max_batch_size", [None, 1, 3, 1000])
def test_the_jobs_and_batches_are_the_basic_sweepers(arguments: list[str], max_batch_size: int | None) -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the reference, in a test only
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(arguments)
    assert grid(overrides, max_batch_size) == BasicSweeper.split_arguments(overrides, max_batch_size)


def test_an_interval_or_a_bad_batch_size_is_refused_as_the_basic_sweeper_refuses_it() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    with pytest.raises(HydraException, match="does not support sweep type : INTERVAL_SWEEP"):
        grid(OverridesParser.create().parse_overrides(["w=interval(0,1)"]), None)
    with pytest.raises(HydraException, match="max_batch_size=0"):
        grid(OverridesParser.create().parse_overrides(["a=1,2"]), 0)


def test_the_jobs_composed_hold_every_value_under_every_group_choice() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (jobs,) = grid(OverridesParser.create().parse_overrides(
        ["+strategy=momentum,sma_crossover", "strategy.fast=range(5,25)", "strategy.slow=range(30,230,10)"]), None)
    groups = shape_groups(jobs, lambda override: override.startswith("+strategy="))
    assert [len(group) for group in groups] == [400, 400] and groups[0] + groups[1] == jobs
    for group in groups:
        taken = cover(group)
        assert len(taken) == 20 and taken[0] == group[0] and all(job in group for job in taken)  # a diagonal
        assert {o for job in taken for o in job} == {o for job in group for o in job}
        assert cover(group, lambda o: o.split("=")[0]) == [group[0]]  # every value of a key as one: the first job
    (ragged,) = grid(OverridesParser.create().parse_overrides(["a=1,2,3", "b=4,5", "c=6"]), None)
    assert cover(ragged[1:]) == [["a=1", "b=5", "c=6"], ["a=2", "b=4", "c=6"], ["a=3", "b=4", "c=6"]]


def test_a_key_takes_any_scalar_when_its_value_is_untyped_or_an_optional_string() -> None:
    from dataclasses import dataclass, field

    from omegaconf import OmegaConf

    @dataclass
    class Schema:
        rate: float = 0.1
        name: str = "x"
        label: str | None = None
        rules: dict = field(default_factory=dict)

    config = OmegaConf.merge(OmegaConf.structured(Schema), {"rules": {"fast": 5}})
    OmegaConf.set_struct(config, True)
    overrides = {"rate=0.2", "name=y", "label=z", "rules.fast=7", "rules.fast=[1]", "+rules.slow=3", "nope=1"}
    assert free_keys(config, overrides) == {"label=z", "rules.fast=7"}
    assert config.rules.fast == 5 and config.label is None  # probed on a copy


def runs_of(tracking_uri: str, *search: str, **options: object) -> list:
    client = MlflowClient(tracking_uri)
    return client.search_runs([client.get_experiment_by_name("trading_experiment").experiment_id], *search,
                              **options)


@pytest.mark.parametrize("sweeper", ["grid", "basic"])
def test_a_bad_value_in_the_last_job_stops_the_sweep_before_any_job(tmp_path: Path, cli_env: dict,
                                                                   tracking_uri: str, sweeper: str) -> None:
    done = run_cli(["runner", "-m", f"hydra/sweeper={sweeper}", "+strategy=sma_crossover", "model=none",
                    "data=synthetic", "data.n_bars=300", "strategy.fast=5,10,20", "backtest.commission=0.001,abc"],
                   cli_env, tmp_path)
    assert done.returncode == 2 and "Value 'abc' of type 'str' could not be converted to Float" in done.stderr
    assert "Traceback" not in done.stderr
    runs = runs_of(tracking_uri)
    assert [(r.data.tags["runner.role"], r.info.status) for r in runs] == [("sweep_parent", "FAILED")]


def test_params_from_the_config_and_batches_run_every_job_in_the_basic_sweepers_order(
        tmp_path: Path, cli_env: dict, tracking_uri: str) -> None:
    done = run_cli(["runner", "-m", "+strategy=sma_crossover", "model=none", "data=synthetic", "data.n_bars=300",
                    "+hydra.sweeper.params={strategy.slow:'30,40'}", "hydra.sweeper.max_batch_size=2",
                    "strategy.fast=5,10"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    runs = runs_of(tracking_uri, "tags.job_number != ''", order_by=["start_time"])
    assert [(r.data.tags["job_number"], r.data.params["strategy.slow"], r.data.params["strategy.fast"])
            for r in runs] == [("0", "30", "5"), ("1", "30", "10"), ("2", "40", "5"), ("3", "40", "10")]
    assert {r.info.status for r in runs} == {"FINISHED"}
