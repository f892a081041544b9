"""What ``runner.clean`` selects and frees: runs by status, age and engine version (never RUNNING, never a
registered model's run), their logged models, orphaned artifact folders, and the purge through ``mlflow gc``."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError
from runner.tracking.queries import engine_version
from runner.tracking.registry import registered_run_ids
from runner.tracking.store import local_path

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

CLEANABLE = ("FINISHED", "FAILED", "KILLED")
CHILD_LOOKUPS = 100  # candidates that may have children, searched for one by one
_RUN_DIR = re.compile(r"^[0-9a-f]{32}$")
_AGE = re.compile(r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?"
                  r"(?:(?P<s>\d+(?:\.\d+)?)s)?$")


@dataclass
class Plan:
    """Runs to delete (with their logged models), matching runs kept (a registered version or a kept run needs
    them), orphaned folders, and the bytes each frees (None where the artifacts are not on this disk)."""

    runs: list[Run] = field(default_factory=list)
    models: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # run id -> [(model id, location)]
    kept: list[tuple[Any, str]] = field(default_factory=list)  # (run, why it stays)
    orphans: list[Path] = field(default_factory=list)
    sizes: dict[str, int | None] = field(default_factory=dict)  # run id or orphan path -> bytes

    @property
    def total_bytes(self) -> int:
        return sum(size for size in self.sizes.values() if size)


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``1d12h``, ``90m`` -> seconds; ValueError naming the allowed form."""
    match = _AGE.match(text.strip()) if text else None
    if not match or not any(match.groupdict().values()):
        raise ConfigError(f"--older-than {text!r} is not an age; use #d#h#m#s, e.g. 30d, 12h or 1d12h.")
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    return sum(float(v) * units[k] for k, v in match.groupdict().items() if v)


def parse_statuses(text: str) -> list[str]:
    statuses = [s.strip().upper() for s in text.split(",") if s.strip()]
    bad = [s for s in statuses if s not in CLEANABLE]
    if bad or not statuses:
        never = " (RUNNING runs are never cleaned: end stale ones with runner.report --stale --mark)" if \
            "RUNNING" in bad else ""
        raise ConfigError(f"--status {text!r}: allowed: {', '.join(CLEANABLE)}, comma-separated{never}.")
    return statuses


def folder_bytes(path: Path | None) -> int | None:
    if path is None:
        return None
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "",
             deleted_too: bool = False) -> list[Any]:
    from mlflow.entities import ViewType

    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=5000, page_token=token,
                                  run_view_type=ViewType.ALL if deleted_too else ViewType.ACTIVE_ONLY)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def logged_models(client: MlflowClient, experiment_ids: list[str]) -> list[Any]:
    models, token = [], None
    while True:
        page = client.search_logged_models(experiment_ids=experiment_ids, max_results=1000, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            return models


def plan_cleanup(client: MlflowClient, experiments: list[Any], statuses: list[str] | None, older_than_s: float | None,
                 before_version: int | None) -> Plan:
    """Select the runs matching every criterion given (none given: no runs, orphans only) and size them.
    Runs already soft-deleted (in the UI, or by an interrupted clean) that match are purged too.

    Where an experiment's artifact root is a local folder holding run folders, the orphans need every run's id:
    then one read of the whole store (deleted runs too) decides everything. Elsewhere (a server's proxied or
    object-store root) it reads only what decides: the runs matching the status and age (a search per status), and
    the runs that may point at one of them (``referring_runs``)."""
    from mlflow.entities import ViewType

    every = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL, max_results=50000)]
    ids = [e.experiment_id for e in experiments]
    folders = run_folders(experiments)
    store_runs = all_runs(client, every, deleted_too=True) if any(folders.values()) else None
    cutoff = None if older_than_s is None else (time.time() - older_than_s) * 1000
    candidates = []
    if statuses or cutoff is not None or before_version is not None:
        found = ([r for r in store_runs if r.info.experiment_id in ids] if store_runs is not None else
                 [r for where in candidate_filters(statuses, cutoff) for r in all_runs(client, ids, where,
                                                                                        deleted_too=True)])
        candidates = [r for r in found if r.info.status in (statuses or CLEANABLE)  # never RUNNING or SCHEDULED
                      and (cutoff is None or (r.info.start_time or 0) < cutoff)
                      and (before_version is None or engine_version(r) < before_version)]
    plan = Plan()
    why_kept: dict[str, str] = {}
    if candidates:
        referring = store_runs if store_runs is not None else referring_runs(client, every, candidates)
        why_kept = needed_runs(client, candidates, referring)
    models_by_run: dict[str, list[tuple[str, str]]] = {}
    for model in logged_models(client, ids) if candidates else []:
        if model.source_run_id:
            models_by_run.setdefault(model.source_run_id, []).append((model.model_id, model.artifact_location))
    for run in candidates:
        run_id = run.info.run_id
        if run_id in why_kept:
            plan.kept.append((run, why_kept[run_id]))
            continue
        plan.runs.append(run)
        plan.models[run_id] = models_by_run.get(run_id, [])
        sizes = [folder_bytes(local_path(run.info.artifact_uri))] + [
            folder_bytes(local_path(location)) for _, location in plan.models[run_id]]
        plan.sizes[run_id] = None if any(s is None for s in sizes) else sum(sizes)
    plan.orphans = find_orphans(client, folders, {r.info.run_id for r in store_runs or []}, every)
    for path in plan.orphans:
        plan.sizes[str(path)] = folder_bytes(path)
    return plan


def candidate_filters(statuses: list[str] | None, cutoff_ms: float | None) -> list[str]:
    """Search filters for runs of these statuses (one each: MLflow's filters have no OR, nor IN but for run ids;
    None: any status) started before ``cutoff_ms``."""
    age = f"attributes.start_time < {int(cutoff_ms)}" if cutoff_ms is not None else ""
    if not statuses:
        return [age]
    return [" and ".join(c for c in (f"attributes.status = '{status}'", age) if c) for status in statuses]


def may_have_children(run: Run) -> bool:
    """A sweep parent, or a run not made by the runner (another tool may nest runs under it): only the runner's sweep
    parents have children among its runs."""
    tags = run.data.tags
    return tags.get("runner.role") == "sweep_parent" or "config_hash" not in tags


def referring_runs(client: MlflowClient, experiment_ids: list[str], candidates: list[Run]) -> list[Run]:
    """Every run that may point at a candidate: the resumed jobs' pointer runs (``resumed_from``), and the children
    of each candidate that may have some (one search each: a tag's equality is an indexed lookup). With more than
    ``CHILD_LOOKUPS`` such candidates, every run of the store (one read costs less than that many searches)."""
    parents = [r.info.run_id for r in candidates if may_have_children(r)]
    if len(parents) > CHILD_LOOKUPS:
        return all_runs(client, experiment_ids, deleted_too=True)
    found = {r.info.run_id: r for r in all_runs(client, experiment_ids, "tags.resumed_from IS NOT NULL",
                                                deleted_too=True)}
    for run_id in parents:
        found.update((r.info.run_id, r) for r in all_runs(client, experiment_ids,
                                                            f"tags.mlflow.parentRunId = '{run_id}'", deleted_too=True))
    return list(found.values())


def needed_runs(client: MlflowClient, candidates: list[Any], referring: list[Run]) -> dict[str, str]:
    """Candidates that must stay, and why: the run behind a registered model version, the sweep parent of a run
    that stays, the run a resumed job that stays points at (``resumed_from``). ``referring``: the runs that may
    point at a candidate (``referring_runs``)."""
    needed = {run_id: f"backs registered {', '.join(versions)}" for run_id, versions in
              registered_run_ids(client).items()}
    going = {r.info.run_id for r in candidates} - set(needed)
    runs = list({r.info.run_id: r for r in [*referring, *candidates]}.values())
    changed = True
    while changed:  # a kept child keeps its parent, which may keep the run it resumed from, ...
        changed = False
        for run in runs:
            if run.info.run_id in going:
                continue
            for tag, why in (("mlflow.parentRunId", "the sweep parent of kept run"),
                             ("resumed_from", "stands in for the resumed job")):
                ref = run.data.tags.get(tag)
                if ref in going:
                    going.discard(ref)
                    needed[ref] = f"{why} {run.info.run_name}"
                    changed = True
    return needed


def run_folders(experiments: list[Any]) -> dict[Path, list[Path]]:
    """The run folders (``<root>/<run id>``) under each of the experiments' local artifact roots (none elsewhere)."""
    roots = {p for p in (local_path(e.artifact_location) for e in experiments) if p is not None and p.is_dir()}
    return {root: sorted(p for p in root.iterdir() if p.is_dir() and _RUN_DIR.match(p.name)) for root in roots}


def find_orphans(client: MlflowClient, folders: dict[Path, list[Path]], run_ids: set[str],
                 every_experiment: list[str]) -> list[Path]:
    """Run folders (``folders``: ``run_folders``) and model folders (``<root>/models/m-...``) that no run or logged
    model of the store owns (``run_ids``: every run, deleted ones too)."""
    from mlflow.exceptions import MlflowException

    orphans = []
    for root in sorted(folders):
        orphans += [p for p in folders[root] if p.name not in run_ids]
        models = sorted((root / "models").glob("m-*")) if (root / "models").is_dir() else []
        live = {m.model_id for m in logged_models(client, every_experiment)} if models else set()
        for path in (p for p in models if p.name not in live):
            try:  # a deleted model is not searchable, but still owns its folder until it is purged
                client.get_logged_model(path.name)
            except MlflowException:
                orphans.append(path)
    return orphans


def purge(client: MlflowClient, plan: Plan, backend_store_uri: str, tracking_uri: str) -> str:
    """Soft-delete the planned runs and their logged models, then purge them with MLflow's own ``mlflow gc``
    (artifacts and rows), then remove the orphaned folders and the emptied run folders. Returns gc's output."""
    from mlflow.cli import gc
    from mlflow.exceptions import MlflowException

    run_ids = [r.info.run_id for r in plan.runs]
    model_ids = [model_id for models in plan.models.values() for model_id, _ in models]
    for run in plan.runs:  # a run deleted in the UI (or by an interrupted clean) is only purged
        if run.info.lifecycle_stage != "deleted":
            client.delete_run(run.info.run_id)
    for model_id in model_ids:
        with contextlib.suppress(MlflowException):  # already deleted
            client.delete_logged_model(model_id)
    output = io.StringIO()
    if run_ids:
        # The tracking URI too: artifacts behind a server's proxy resolve through it.
        args = ["--backend-store-uri", backend_store_uri, "--tracking-uri", tracking_uri,
                "--run-ids", ",".join(run_ids)]
        if model_ids:
            args += ["--logged-model-ids", ",".join(model_ids)]
        with contextlib.redirect_stdout(output):
            gc.main(args=args, standalone_mode=False)
    locations = [r.info.artifact_uri for r in plan.runs] + [loc for models in plan.models.values()
                                                              for _, loc in models]
    for folder in filter(None, map(local_path, locations)):  # <root>/<run id>/artifacts, <root>/models/m-../artifacts
        for empty in (folder, folder.parent):
            if empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()
    for path in plan.orphans:
        shutil.rmtree(path, ignore_errors=True)
    return output.getvalue()
