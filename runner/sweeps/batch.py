"""``hydra/launcher=batch``: a sweep's jobs grouped by everything but their strategy's parameters; a group of rule
runs (no model, holdout evaluation) goes through the engine in one pass per chunk of configurations and is tracked
as one child run per configuration, exactly as a single run logs it; every other job runs as Hydra's basic
launcher runs it.

Composing a job's config is Hydra's slowest step (~70 ms). A group composes its first job; each other job's config
is that config with its own ``strategy.KEY=VALUE`` overrides applied the way Hydra applies them
(``OmegaConf.update(..., merge=True)``), and its Hydra node the first's with the job's own overrides, number and
folder. The group's last job is also composed by Hydra and compared with what was derived for it: any difference
(an interpolation, a resolver reading the job number) and every job of the group is composed by Hydra instead.

Each configuration's child run carries its params, tags, metrics, tables, config and Hydra files, written in one
``log_batch`` and one upload at its end (``MLflowLogger.defer_writes``), by a second process for a large group on a
local store (``runner.tracking.writer``, ``hydra.launcher.writer``); figures are drawn for the ``figures``
best configurations of the launch only (``hydra.launcher.figures``); any run's figures come from running its
config alone (``python -m runner`` with the run's ``overrides`` tag), which gives the same numbers.
"""

from __future__ import annotations

import copy
import gc
import heapq
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

if TYPE_CHECKING:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import JobReturn
    from hydra.types import HydraContext, TaskFunction
    from mlflow.entities import Run

    from runner.data.universe import Universe
    from runner.evaluation.outcome import Outcome, Prepared
    from runner.tracking.logger import MLflowLogger
    from runner.tracking.writer import RunWriter

VARIED = "strategy."  # the keys a group's jobs may differ in
YOUNG_OBJECTS = 20_000  # the garbage collector's youngest generation while a group runs (700 by default)


@dataclass
class Job:
    number: int
    overrides: list[str]
    varied: dict[str, Any]  # strategy.KEY -> value, applied to the group's first config


@dataclass
class Launch:
    """What the launcher gives one launch: Hydra's context, the sweep's config and its settings."""

    hydra_context: HydraContext
    task_function: TaskFunction
    config: DictConfig
    figures: int
    chunk: int
    writer: int  # a group of at least this many configurations is written by a second process (0: never)
    groups: dict[str, bool] = field(default_factory=dict)  # key -> whether it names a config group (asked once)
    logger: MLflowLogger | None = None  # the batched groups' logger (children are logged one after another)
    best: list[tuple[float, int, str, Derived, Prepared, Outcome]] = field(default_factory=list)  # a heap, worst on top


def split_overrides(launch: Launch, parser: OverridesParser, overrides: list[str],
                    ) -> tuple[tuple[str, ...], dict[str, Any]]:
    """A job's overrides as (what its group shares, its own ``strategy.KEY=VALUE`` values): only plain value
    changes of a strategy key (not a config group) with a scalar value vary within a group."""
    shared, varied = [], {}
    for text, override in zip(overrides, parser.parse_overrides(overrides), strict=True):
        key = override.key_or_group
        plain = not (override.is_delete() or override.is_add() or override.is_force_add()
                     or override.is_sweep_override() or override.package is not None)
        value = override.value() if plain else None
        if key not in launch.groups:
            launch.groups[key] = bool(launch.hydra_context.config_loader.get_group_options(key.replace(".", "/")))
        if (plain and key.startswith(VARIED) and key not in varied and not isinstance(value, (dict, list))
                and not launch.groups[key]):
            varied[key] = value
        else:
            shared.append(text)
    return tuple(shared), varied


def compose(launch: Launch, job: Job) -> DictConfig:
    """The job's config as Hydra composes it (what the basic launcher does)."""
    config = launch.hydra_context.config_loader.load_sweep_config(launch.config, list(job.overrides))
    with open_dict(config):
        config.hydra.job.id = job.number
        config.hydra.job.num = job.number
    return config


def launch_jobs(launch: Launch, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    """Every job of the launch, in order: groups of rule configurations batched, the rest one by one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import configure_log, setup_globals

    setup_globals()
    configure_log(launch.config.hydra.hydra_logging, launch.config.hydra.verbose)
    Path(str(launch.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, ...], list[Job]] = {}
    parser = OverridesParser.create(config_loader=launch.hydra_context.config_loader)
    for offset, overrides in enumerate(job_overrides):
        shared, varied = split_overrides(launch, parser, list(overrides))
        groups.setdefault(shared, []).append(Job(initial_job_idx + offset, list(overrides), varied))
    returns: dict[int, JobReturn] = {}
    for jobs in groups.values():
        first = compose(launch, jobs[0])
        if len(jobs) > 1 and batchable(first):
            returns.update(run_group(launch, jobs, first))
        else:
            for job in jobs:
                returns[job.number] = run_basic(launch, job, first if job is jobs[0] else None)
    draw_best(launch)
    return [returns[initial_job_idx + offset] for offset in range(len(job_overrides))]


def run_basic(launch: Launch, job: Job, config: DictConfig | None = None) -> JobReturn:
    """One job as Hydra's basic launcher runs it."""
    from hydra.core.utils import configure_log, run_job

    returned = run_job(hydra_context=launch.hydra_context, task_function=launch.task_function,
                       config=config if config is not None else compose(launch, job), job_dir_key="hydra.sweep.dir",
                       job_subdir_key="hydra.sweep.subdir")
    configure_log(launch.config.hydra.hydra_logging, launch.config.hydra.verbose)
    return returned


def batchable(config: DictConfig) -> bool:
    """A rule (no model) judged on one holdout backtest: its weights need nothing but the bars."""
    from runner.sweeps.job import rule_on_holdout

    return rule_on_holdout(config)


@dataclass
class Derived:
    """A job's config (without its Hydra node, as a task function gets it) and its Hydra node (plain)."""

    config: DictConfig
    hydra: dict[str, Any]


def deriver(launch: Launch, jobs: list[Job], first: DictConfig) -> Callable[[Job], Derived]:
    """``derive(job) -> Derived`` for the group's jobs: from the first job's config, or (when that would differ
    from Hydra's composition, checked on the group's last job) from Hydra's composition of each job."""
    task = copy.deepcopy(first)
    with read_write(task), open_dict(task):
        del task["hydra"]
    hydra = OmegaConf.to_container(first.hydra, resolve=False)
    sweep_dir = str(first.hydra.sweep.dir)

    def derived(job: Job) -> Derived:
        config = copy.deepcopy(task)
        with read_write(config), open_dict(config):
            for key, value in job.varied.items():
                OmegaConf.update(config, key, value, merge=True)
        with read_write(first.hydra), open_dict(first.hydra):
            first.hydra.job.num = job.number  # the sweep's subdir (${hydra.job.num} by default), resolved for it
            subdir = str(first.hydra.sweep.subdir)
        node = {**hydra, "overrides": {**hydra["overrides"], "task": list(job.overrides)},
                "job": {**hydra["job"], "num": job.number, "id": str(job.number)},
                "runtime": {**hydra["runtime"], "output_dir": os.path.abspath(os.path.join(sweep_dir, subdir))}}
        return Derived(config, node)

    def composed(job: Job) -> Derived:
        config = compose(launch, job)
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.runtime.output_dir = os.path.abspath(os.path.join(sweep_dir, str(config.hydra.sweep.subdir)))
        node = OmegaConf.to_container(config.hydra, resolve=False)
        with read_write(config), open_dict(config):
            del config["hydra"]
        return Derived(config, node)

    last = jobs[-1]
    check = composed(last)
    same = OmegaConf.to_container(check.config, resolve=False) == OmegaConf.to_container(derived(last).config,
                                                                                         resolve=False)
    if not same and launch.config.hydra.verbose:
        print("batch launcher: this group's configs cannot be derived from its first; composing each",
              file=sys.stderr)
    return derived if same else composed


def run_group(launch: Launch, jobs: list[Job], first: DictConfig) -> dict[int, JobReturn]:
    """A group of rule configurations: chunk by chunk, weights, one engine pass and one child run each."""
    from hydra.core.hydra_config import HydraConfig

    from runner.sweeps.launch import sweep_state
    from runner.tracking.local_record import RECORD_DIR, run_logger

    sweep_dir = Path(str(first.hydra.sweep.dir))
    state = sweep_state(sweep_dir)
    with read_write(first.hydra), open_dict(first.hydra):
        first.hydra.runtime.output_dir = str(sweep_dir.absolute() / str(first.hydra.sweep.subdir))
    HydraConfig.instance().set_config(first)  # the group's choices, for what reads this process's Hydra node
    derive = deriver(launch, jobs, first)
    logger = run_logger(state["experiment_name"], state["tracking_uri"], sweep_dir.absolute() / RECORD_DIR,
                        sweep_dir.absolute() / RECORD_DIR)
    logger.defer_writes = True
    launch.logger = logger
    finished = finished_runs(logger, state)
    started, returns, book = time.time(), {}, None
    counts = {"FINISHED": 0, "FAILED": 0, "resumed": 0}
    with fewer_collections(), writer_for(launch, logger, len(jobs)) as writer:
        for begin in range(0, len(jobs), launch.chunk):
            chunk = [(job, derive(job)) for job in jobs[begin:begin + launch.chunk]]
            values, book = run_chunk(launch, chunk, state, logger, finished, book, counts)
            for (job, item), value in zip(chunk, values, strict=True):
                returns[job.number] = job_return(job, item, value, state["mode"])
            if writer is not None:
                writer.check()
            print(f"[{state['sweep_name']}] batch: {begin + len(chunk)}/{len(jobs)} configurations done in "
                  f"{time.time() - started:.1f} s ({counts['FINISHED']} FINISHED, {counts['FAILED']} failed, "
                  f"{counts['resumed']} already run)")
    return returns


@contextmanager
def writer_for(launch: Launch, logger: MLflowLogger, configurations: int) -> Iterator[RunWriter | None]:
    """A ``RunWriter`` for the group's runs while it runs, when the group has ``launch.writer`` configurations
    or more, logs into a local store (a tracking server's runs keep their local record, written here) and the
    process was launched so that a spawned one does not run its script again; every run handed to it is written
    and ended when the group ends, however it ends."""
    from runner.tracking.local_record import keeps_record
    from runner.tracking.writer import RunWriter, spawn_leaves_main_alone

    if (not launch.writer or configurations < launch.writer or keeps_record(logger.tracking_uri)
            or not spawn_leaves_main_alone()):
        yield None
        return
    writer = logger.writer = RunWriter(logger.tracking_uri)
    try:
        yield writer
    except BaseException:
        logger.writer = None
        writer.close(raise_failure=False)  # the error on its way out is the one to see
        raise
    logger.writer = None
    writer.close()


@contextmanager
def fewer_collections(young: int = YOUNG_OBJECTS) -> Iterator[None]:
    """The cyclic garbage collector's youngest generation collected every ``young`` new objects instead of every
    700 while a group runs: logging a configuration makes thousands of short-lived objects. A 400-configuration
    grid's group, measured: 2,090 young, 190 middle and 4 full collections (1.7 s) at 700; 30, 2 and 1 (0.5 s) with
    this. At most ``young`` objects wait for a collection (a few MB, estimated; a 1,000-configuration grid peaked at
    756 MB RSS with this, measured)."""
    before = gc.get_threshold()
    gc.set_threshold(young, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def finished_runs(logger: MLflowLogger, state: dict[str, Any]) -> dict[str, Run]:
    """config hash -> the latest FINISHED run a resumed job may stand on (one paged search for the whole group)."""
    from runner.sweeps.job import finished_scope
    from runner.sweeps.ledger import search_all
    from runner.tracking.queries import version_filter

    runs = search_all(logger.client, logger.experiment_id, version_filter(finished_scope(state)))
    return {run.data.tags["config_hash"]: run for run in sorted(runs, key=lambda r: r.info.start_time)
            if "config_hash" in run.data.tags}  # by start time: the latest wins


def run_chunk(launch: Launch, chunk: list[tuple[Job, Derived]], state: dict[str, Any], logger: MLflowLogger,
              finished: dict[str, Run], book: Universe | None, counts: dict[str, int],
              ) -> tuple[list[float], Universe | None]:
    """Prepare each configuration, run the chunk's engine pass, then track each as its child run. Returns the
    jobs' values (NaN for a failed one) and the bars, loaded once for the group."""
    from runner.config.schema import typed
    from runner.engine.grid import grid_backtests
    from runner.evaluation.experiment import prepare
    from runner.evaluation.outcome import Outcome
    from runner.sweeps.job import job_identity, point_to

    metric = state["metric"]
    plans: list[tuple[str, Any]] = []  # per job: ("resumed", value) | ("failed", None) | ("run", prepared)
    for _job, item in chunk:
        resolved = OmegaConf.to_container(item.config, resolve=True)
        label, title, tags = job_identity(resolved, state, item.hydra)
        previous = finished.get(tags["config_hash"]) if resolved["resume"] or state.get("reuse_runs") else None
        if previous is not None:
            plans.append(("resumed", point_to(logger, previous, tags, label, title, state, metric, say=False)))
            counts["resumed"] += 1
            continue
        try:
            prepared = prepare(typed(item.config), item.hydra["runtime"]["choices"]["data"], book=book)
            book = prepared.book
            weights = (prepared.strategy.portfolio_weights(book) if book.series else None)
        except Exception:  # noqa: BLE001 - run alone below, it fails the same way and is recorded as a job's failure
            plans.append(("failed", None))
            continue
        plans.append(("run", (prepared, weights, label, title, tags)))
    series = [plan[1] for plan in plans if plan[0] == "run" and plan[1][1] is not None]
    results = iter(())
    if series:
        first = series[0][0]
        targets = np.column_stack([np.asarray(weights, dtype=np.float64).reshape(len(first.book.index))
                                   for _, weights, *_ in series])
        results = grid_backtests(np.asarray(first.book.close, dtype=np.float64).reshape(-1), targets,
                                 first.train_end, first.val_end, first.backtest, first.book.index, chunk=launch.chunk)
    values = []
    for (job, item), (kind, plan) in zip(chunk, plans, strict=True):
        if kind == "resumed":
            values.append(plan)
            continue
        if kind == "failed":  # run alone, it fails the same way, as a job's failure: its child FAILED, its error
            label, title, tags = job_identity(OmegaConf.to_container(item.config, resolve=True), state, item.hydra)
            prepared = outcome = None
        else:
            prepared, weights, label, title, tags = plan
            outcome = None  # a universe's configuration: computed alone, by run_tracked
            if weights is not None:
                result = next(results)
                outcome = Outcome(result, float(result.flat_metrics().get(metric, math.nan)))
        value, failed = track(launch, job, item, prepared, outcome, state, logger, label, title, tags)
        values.append(value)
        counts["FAILED" if failed else "FINISHED"] += 1
    return values, book


def child_logger(logger: MLflowLogger, item: Derived) -> MLflowLogger:
    """The group's logger, keeping this configuration's record in its own job folder (tracking servers only)."""
    from runner.tracking.local_record import RECORD_DIR, RunRecord

    if hasattr(logger, "record"):
        logger.record = RunRecord(Path(item.hydra["runtime"]["output_dir"], RECORD_DIR))
    return logger


def track(launch: Launch, job: Job, item: Derived, prepared: Prepared | None, outcome: Outcome | None,
          state: dict[str, Any], logger: MLflowLogger, label: str, title: str, tags: dict[str, str],
          ) -> tuple[float, bool]:
    """One configuration's child run, through the single run's own ``run_tracked``: (its value, whether it
    failed)."""
    from runner.errors import UserError
    from runner.pipeline import ServerLost, run_tracked
    from runner.sweeps.launch import remember_segment_rows
    from runner.sweeps.trials import segment_rows, selection_segment
    from runner.tracking.local_record import server_lost
    from runner.tracking.queries import DATA_DIGEST_TAG

    if server_lost(state["tracking_uri"]):
        raise ServerLost(state["sweep_dir"], state["tracking_uri"])
    if prepared is not None:  # tagged from the start, not again at its end (run_tracked gives it the same digest)
        tags = {**tags, DATA_DIGEST_TAG: prepared.book.digest()}
    child_logger(logger, item).start_run(title, tags=tags, parent_run_id=state["parent_run_id"])
    try:
        _, outcome = run_tracked(logger, item.config, prepared, hydra=item.hydra, outcome=outcome, figures=False,
                                 tables="parquet")
    except UserError as error:
        print(f"[{label}] error: {error}", file=sys.stderr)
        return math.nan, True
    except Exception:  # noqa: BLE001 - a bug (ours or the strategy's): FAILED with its traceback; the rest go on
        print(f"[{label}] failed:\n{traceback.format_exc()}", file=sys.stderr)
        return math.nan, True
    segment = selection_segment(state["metric"])
    if segment in ("train", "val", "test"):  # its sweep's end needs these bars: from here, not read back
        remember_segment_rows(outcome.run_id, segment_rows(outcome.result.portfolio_values(), segment))
    value = outcome.selection_value
    if math.isfinite(value) and launch.figures > 0:
        key = value if state["mode"] == "max" else -value
        entry = (key, job.number, outcome.run_id, item, prepared, outcome)
        if len(launch.best) < launch.figures:
            heapq.heappush(launch.best, entry)
        elif key > launch.best[0][0]:  # ties: the earlier job stays
            heapq.heapreplace(launch.best, entry)
    if server_lost(state["tracking_uri"]):
        raise ServerLost(state["sweep_dir"], state["tracking_uri"])
    return value, False


def job_return(job: Job, item: Derived, value: float, mode: str) -> JobReturn:
    """What Hydra's sweeper reads of a job: its overrides, config and value (the worst for the mode if it failed)."""
    from hydra.core.utils import JobReturn, JobStatus

    from runner.sweeps.job import worst

    returned = JobReturn(overrides=list(job.overrides), cfg=item.config, working_dir=os.getcwd(),
                         task_name=str(item.hydra["job"]["name"]), status=JobStatus.COMPLETED)
    returned.return_value = value if math.isfinite(value) else worst(mode)
    return returned


def draw_best(launch: Launch) -> None:
    """The figures and table views of the launch's ``figures`` best batched configurations, into their runs."""
    from runner.tracking.recorder import log_views

    for _, _, run_id, item, prepared, outcome in sorted(launch.best, key=lambda entry: entry[:2], reverse=True):
        log_views(child_logger(launch.logger, item), run_id, prepared, outcome)
    launch.best.clear()
