"""The research ledger: every configuration an experiment evaluated, as a trial identified by its config hash and
the digest of its data, with the launches (sweep names, single runs) that evaluated it.

A trial is counted once however often it ran: a sweep relaunched under its name, a resumed job's pointer run
(tag ``resumed_from``: it stands for the run it points at) or a repeated single run adds no trial. A job that
failed was still tried and counts (under its config hash alone: it may have failed before its data was read).
Left out: sweep parents, an attempt whose process died and ran again (``runner.lost``) and a run replaced by
its recovered copy (``runner.superseded_by``).

Scopes: a sweep name (every launch under that name: the trials a sweep's winner is judged against), or the
experiment's runs on one data digest (``runner.report`` without ``--sweep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.tracking.lifecycle import LOST_TAG
from runner.tracking.queries import DATA_DIGEST_TAG, ENGINE_VERSION_TAG, members_filter

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SUPERSEDED_TAG = "runner.superseded_by"
PAGE = 5000


@dataclass
class Trial:
    """One configuration on one dataset, and every run that evaluated it."""

    config_hash: str
    data_digest: str | None
    runs: list[Any] = field(default_factory=list)  # MLflow runs, pointers resolved to the run they point at
    launches: set[str] = field(default_factory=set)  # sweep names, or "single run"

    @property
    def finished(self) -> list[Any]:
        return [r for r in self.runs if r.info.status == "FINISHED"]

    def member(self, engine_version: str | None = None) -> Any | None:
        """The run that stands for this trial: its latest FINISHED evaluation (of ``engine_version`` if given)."""
        runs = [r for r in self.finished
                if engine_version is None or r.data.tags.get(ENGINE_VERSION_TAG) == engine_version]
        return max(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)) if runs else None


@dataclass
class Ledger:
    """The trials in one scope (``scope``: what was counted, as ``best_run.json`` states it)."""

    trials: list[Trial]
    scope: dict[str, Any]

    @property
    def n_trials(self) -> int:
        return len(self.trials)

    def members(self, engine_version: str | None = None) -> list[Any]:
        """One FINISHED run per trial (the trials with none, e.g. failed ones, stand for nothing)."""
        return [m for m in (t.member(engine_version) for t in self.trials) if m is not None]

    def table(self) -> list[dict[str, Any]]:
        """One row per trial: what ``runner.report --ledger`` prints."""
        return [{"config_hash": t.config_hash, "data_digest": t.data_digest, "evaluations": len(t.runs),
                 "finished": len(t.finished), "launches": sorted(t.launches),
                 "run_ids": [r.info.run_id for r in t.runs]} for t in self.trials]


def search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
    """Every run of the experiment that ``filter_string`` keeps, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=PAGE, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def counted(run: Run) -> bool:
    """Whether a run is an evaluation at all (not a parent, a lost attempt or a superseded partial run)."""
    tags = run.data.tags
    return tags.get("runner.role") != "sweep_parent" and LOST_TAG not in tags and SUPERSEDED_TAG not in tags


def _launch(run: Run) -> str:
    return run.data.tags.get("sweep_name") or "single run"


def build_ledger(client: MlflowClient, experiment_id: str, runs: list[Run], scope: dict[str, Any]) -> Ledger:
    """The trials of ``runs``: pointers resolved, each configuration on each dataset once."""
    runs = [r for r in runs if counted(r)]
    pointed = sorted({r.data.tags["resumed_from"] for r in runs if "resumed_from" in r.data.tags})
    known = {r.info.run_id: r for r in runs}
    missing = [run_id for run_id in pointed if run_id not in known]
    for start in range(0, len(missing), 100):
        for target in client.search_runs([experiment_id], filter_string=members_filter(missing[start:start + 100]),
                                         max_results=100):
            known[target.info.run_id] = target
    trials: dict[tuple[str, str | None], Trial] = {}
    digests: dict[str, set[str]] = {}
    evaluations = []
    for run in runs:
        target = known.get(run.data.tags.get("resumed_from", run.info.run_id))
        if target is None or "config_hash" not in target.data.tags:
            continue  # a pointer at a run since deleted, or a run from before config hashes
        evaluations.append((run, target))
        if target.data.tags.get(DATA_DIGEST_TAG):
            digests.setdefault(target.data.tags["config_hash"], set()).add(target.data.tags[DATA_DIGEST_TAG])
    for run, target in evaluations:
        config = target.data.tags["config_hash"]
        digest = target.data.tags.get(DATA_DIGEST_TAG)
        if digest is None and digests.get(config):  # failed before its data was read: the same configuration
            digest = min(digests[config])
        trial = trials.setdefault((config, digest), Trial(config, digest))
        if all(r.info.run_id != target.info.run_id for r in trial.runs):
            trial.runs.append(target)
        trial.launches.add(_launch(run))
    return Ledger(list(trials.values()), scope)


def sweep_runs(client: MlflowClient, experiment_id: str, sweep_name: str) -> list[Run]:
    """Every run tagged with the sweep name: its launches' parents and all their children's attempts."""
    escaped = sweep_name.replace("'", "\\'")
    return search_all(client, experiment_id, f"tags.sweep_name = '{escaped}'")


def sweep_ledger(client: MlflowClient, experiment_id: str, sweep_name: str, tagged: list[Run] | None = None) -> Ledger:
    """Every trial of a sweep name over all its launches (parents that were replaced by a recovered copy left out);
    ``tagged``: ``sweep_runs``, when read already."""
    tagged = sweep_runs(client, experiment_id, sweep_name) if tagged is None else tagged
    parents = [r.info.run_id for r in tagged
               if r.data.tags.get("runner.role") == "sweep_parent" and SUPERSEDED_TAG not in r.data.tags]
    ledger = build_ledger(client, experiment_id, tagged, {})
    ledger.scope = {"kind": "sweep name", "sweep_name": sweep_name, "launches": len(parents),
                    "parent_run_ids": parents, "n_configurations": ledger.n_trials}
    return ledger


def experiment_ledger(client: MlflowClient, experiment_id: str, filter_string: str | None,
                      data_digest: str | None) -> Ledger:
    """The distinct configurations among the experiment's runs in ``filter_string`` on the same data as the top run
    (``data_digest``: only runs tagged with it are read; pointer runs repeat a run read already, and a run that
    failed before reading its data is on no data. With None, a top run from before digests: every run)."""
    from runner.tracking.queries import and_filter

    scoped = and_filter(filter_string, f"tags.{DATA_DIGEST_TAG} = '{data_digest}'" if data_digest else None)
    runs = search_all(client, experiment_id, scoped or "")
    ledger = build_ledger(client, experiment_id, runs, {})
    if data_digest is not None:
        ledger.trials = [t for t in ledger.trials if t.data_digest == data_digest]
    ledger.scope = {"kind": "experiment", "data_digest": data_digest, "n_configurations": ledger.n_trials,
                    "runs_read": len(runs)}
    return ledger
