"""The served strategy (``runner.serving``) against the backtest, and the run's datasets (``runner.tracking.lineage``),
in process: the same bars give the backtest's weights; a later bar never moves an earlier weight; the same bars give
the same digests. The registry, ``mlflow models serve`` and ``runner.signal`` are in ``test_registry.py`` (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.evaluation.experiment import compute, prepare
from runner.serving.strategy import book_from_bars, book_weights, long_bars
from runner.tracking.lineage import data_inputs, stretches
from runner.tracking.sanitize import to_jsonable
from tests.test_universe_strategies import composed

SERIES = ["+strategy=momentum", "strategy.lookback=15", "data=synthetic", "data.n_bars=700", "seed=5"]
UNIVERSE = ["+strategy=xs_momentum", "strategy.lookback=30", "data=synthetic_universe", "data.n_assets=5",
            "data.n_bars=600", "data.drift_dispersion=0.0005", "seed=5"]


def spec(prepared) -> dict:  # what runner.tracking.packaging.strategy_spec takes from a run's config
    universe = None if prepared.book.series else {"max_fill": prepared.config.data["max_fill"],
                                                  "resample": prepared.config.data.get("resample")}
    return {"data_name": prepared.data_name, "universe": universe}


def served(prepared, outcome, bars) -> np.ndarray:
    standardisation = None
    if outcome.dataset is not None:  # through JSON, as the model carries it
        standardisation = json.loads(json.dumps(to_jsonable(outcome.dataset.standardisation())))
    return book_weights(prepared.strategy, book_from_bars(bars, spec(prepared)), prepared.backtest.max_leverage,
                        outcome.training.model if outcome.training else None, standardisation)


def held(outcome) -> np.ndarray:
    result = outcome.result
    return result.asset_weights if result.asset_weights is not None else result.weights.reshape(-1, 1)


@pytest.mark.parametrize("overrides", [[*SERIES, "model=none"], [*SERIES, "model=linear", "trainer.epochs=2"],
                                       [*UNIVERSE, "model=none"], [*UNIVERSE, "model=linear", "trainer.epochs=2"]],
                         ids=["series-rule", "series-model", "universe-rule", "universe-model"])
def test_the_served_strategy_holds_the_backtests_weights(overrides: list[str]) -> None:
    prepared = prepare(composed(overrides))
    outcome = compute(prepared)
    bars = long_bars(prepared.book)
    assert book_from_bars(bars, spec(prepared)).digest() == prepared.book.digest()  # the same bars, read back
    np.testing.assert_array_equal(served(prepared, outcome, bars), held(outcome))

    last = prepared.book.index[-400]  # only the last 400 bars: warm-up rows hold 0, the rest the backtest's
    tail = served(prepared, outcome, bars[bars["date"] >= last])
    warmup = prepared.strategy.warmup + prepared.sequence_length + 1
    assert not tail[:prepared.strategy.warmup].any()
    np.testing.assert_allclose(tail[warmup:], held(outcome)[-400 + warmup:], rtol=0, atol=1e-9)


def test_a_later_bar_never_moves_an_earlier_served_weight() -> None:
    prepared = prepare(composed([*UNIVERSE, "model=linear", "trainer.epochs=2"]))
    outcome = compute(prepared)
    bars = long_bars(prepared.book)
    k = prepared.book.index[500]
    shocked = bars.copy()
    later = shocked["date"] > k
    shocked.loc[later, ["open", "high", "low", "close"]] *= np.random.default_rng(0).uniform(0.5, 1.5, (later.sum(), 1))
    base, moved = served(prepared, outcome, bars), served(prepared, outcome, shocked)
    np.testing.assert_array_equal(base[:501], moved[:501])
    assert not np.array_equal(base[501:], moved[501:])


def test_a_run_declares_its_bars_stretch_by_stretch(tmp_path: Path) -> None:
    prepared = prepare(composed([*SERIES, "model=none"]), "synthetic")
    inputs = {i.tags[0].value: i.dataset for i in data_inputs(prepared)}
    assert list(inputs) == ["bars", "train", "validation", "test"]
    assert inputs["bars"].digest == prepared.book.digest() and inputs["bars"].name == "synthetic"
    assert json.loads(inputs["train"].profile)["num_bars"] == prepared.train_end
    assert inputs["bars"].source_type == "code" and "SyntheticSeries" in inputs["bars"].source
    assert len({d.digest for d in inputs.values()}) == 4

    files = [tmp_path / "a.parquet", tmp_path / "b.parquet"]  # the same bars in two files: the same digests
    for file in files:
        prepared.book.bars.to_parquet(file)
    from_files = [{i.tags[0].value: i.dataset for i in data_inputs(prepare(composed(
        ["+strategy=momentum", "model=none", "data=csv", f"data.path={file}"]), "csv"))} for file in files]
    assert [{k: d.digest for k, d in found.items()} for found in from_files] == [
        {k: d.digest for k, d in from_files[0].items()}] * 2
    assert from_files[0]["bars"].name == "csv" and from_files[0]["bars"].source_type == "local"
    assert [json.loads(found["bars"].source)["uri"] for found in from_files] == [f.as_uri() for f in files]

    bars = prepared.book.bars.copy()  # one changed bar in test: test and all bars change, train and val do not
    bars.iloc[-3, bars.columns.get_loc("close")] *= 1.01
    bars.to_parquet(files[1])
    changed = {i.tags[0].value: i.dataset.digest for i in data_inputs(prepare(composed(
        ["+strategy=momentum", "model=none", "data=csv", f"data.path={files[1]}"]), "csv"))}
    assert [k for k in changed if changed[k] != from_files[0][k].digest] == ["bars", "test"]


def test_walk_forward_and_cpcv_runs_name_each_fold_and_group() -> None:
    walk = prepare(composed([*SERIES, "model=none", "evaluation=walk_forward"]))
    contexts = stretches(walk)
    folds = walk.folds
    assert contexts[f"fold {folds[-1].number} test"] == (folds[-1].test_start, folds[-1].test_end)
    assert len(contexts) == 1 + 2 * len(folds) + (walk.final_fold is not None)
    cpcv = prepare(composed([*SERIES, "model=none", "evaluation=cpcv"]))
    assert [k for k in stretches(cpcv) if k != "bars"] == [f"group {g}" for g in range(len(cpcv.cpcv.groups))]


@pytest.mark.slow  # five trainings
def test_a_walk_forward_model_serves_its_last_folds_network() -> None:
    """A walk-forward run packages its last fold's network and standardisation: served, they hold the weights that
    fold's test stretch traded."""
    prepared = prepare(composed([*SERIES, "model=linear", "trainer.epochs=2", "evaluation=walk_forward"]))
    outcome = compute(prepared)
    last = prepared.folds[-1]
    weights = served(prepared, outcome, long_bars(prepared.book))[:, 0]
    stitched = pd.Series(outcome.result.weights, index=outcome.result.index)
    stretch = prepared.book.index[last.test_start:last.test_end]
    np.testing.assert_array_equal(weights[last.test_start:last.test_end], stitched.loc[stretch].to_numpy())
