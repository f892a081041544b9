"""Sweeps on Ray through Hydra's own launcher (``hydra/launcher=ray``): the connection the jobs need, the refusal
of a store other machines cannot reach, the CPUs a job was given, and what a stopped sweep leaves behind.

hydra-ray-launcher calls ``ray.init`` only when Ray is not initialised yet. The sweep callback connects first,
with the launcher's own ``hydra.launcher.ray.init`` settings, and adds what every job needs wherever it runs
as Ray job environment variables (``runtime_env.env_vars``): the sweep's state (``RUNNER_SWEEP_STATE``: parent
run, tracking URI, ...), the launch id the sweep folder is named after, and the tracking URI. Joining an
existing cluster drops ``object_store_memory`` (the launcher's default for the cluster it starts itself,
which Ray refuses when connecting). Ray's token authentication is left as Ray sets it up.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError

STATE_ENV = "RUNNER_SWEEP_STATE"
LOCAL_OBJECT_STORE = 78_643_200  # what hydra-ray-launcher gives a cluster it starts (75 MB)
# The launching process's settings a job keeps wherever it runs (never credentials: Ray shows a job's
# environment variables in its dashboard; a node's MLflow credentials come from that node's environment).
FORWARDED = ("RUNNER_LAUNCH_ID", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT",
             "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")


def is_ray(launcher: DictConfig | None) -> bool:
    return str(OmegaConf.select(launcher, "_target_", default="") or "").endswith("RayLauncher")


def init_settings(launcher: DictConfig) -> dict[str, Any]:
    """``hydra.launcher.ray.init`` as ``ray.init`` keyword arguments."""
    return dict(OmegaConf.to_container(launcher.ray.init, resolve=True) or {})


def local_store(uri: str, artifact_location: str) -> str | None:
    """Why a store would be out of reach from other machines (None: a server that serves its artifacts, or
    stores them where every machine reaches them)."""
    scheme = urlparse(uri).scheme
    if scheme in ("", "file", "sqlite") or uri.startswith("/"):
        return f"the tracking store {uri} is a local {'sqlite file' if scheme == 'sqlite' else 'folder'}"
    location = urlparse(artifact_location).scheme
    if location in ("", "file"):
        return f"the server at {uri} stores artifacts in a folder of its own machine ({artifact_location})"
    return None


def check_shared_store(launcher: DictConfig, uri: str, artifact_location: str) -> None:
    """A sweep joining a Ray cluster (``hydra.launcher.ray.init.address``) may run jobs on any of its machines:
    refuse, before any job starts, a store only this machine can write to."""
    address = init_settings(launcher).get("address")
    problem = local_store(uri, artifact_location) if address else None
    if problem:
        raise ConfigError(
            f"hydra.launcher.ray.init.address={address} runs jobs on the cluster's machines, but {problem}: jobs "
            "elsewhere cannot write to it. Use tracking=server tracking.uri=http://SERVER:5000, a server started "
            "with --artifacts-destination on shared storage or an object store (README, 'Running on a "
            "cluster'), or leave out the address to run on a Ray cluster of this machine alone.")


def connect(launcher: DictConfig, job_env: dict[str, str]) -> None:
    """``ray.init`` with the launcher's settings and ``job_env`` in every job's environment."""
    import ray

    settings = init_settings(launcher)
    if settings.get("address"):
        settings.pop("object_store_memory", None)
    else:
        settings.setdefault("object_store_memory", LOCAL_OBJECT_STORE)
    runtime_env = dict(settings.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **job_env}
    os.environ.update(job_env)  # a cluster started here: its workers inherit this process's environment too
    ray.init(**settings, runtime_env=runtime_env)


def job_env(state: dict[str, Any]) -> dict[str, str]:
    return {**{key: os.environ[key] for key in FORWARDED if key in os.environ}, STATE_ENV: json.dumps(state),
            "MLFLOW_TRACKING_URI": state["tracking_uri"]}


def enter_launch_dir(state: dict[str, Any]) -> None:
    """In a Ray job on the launching machine, work from the launch dir (relative ``data.path`` and the like
    mean what they meant there); on another machine, where it does not exist, from the worker's own."""
    launch = state.get("launch_dir")
    if launch and os.path.isdir(launch):
        os.chdir(launch)


def job_cpus() -> int | None:
    """In a Ray job: the CPUs Ray gave it (``hydra.launcher.ray.remote.num_cpus``, 1 by default)."""
    import ray

    if not ray.is_initialized():
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, int(cpus)) if cpus else None


def job_node() -> str | None:
    """In a Ray job: the address of the node it runs on (tag ``runner.ray_node``: where a job ran)."""
    import ray

    if not ray.is_initialized():
        return None
    return ray.util.get_node_ip_address()


def disconnect() -> None:
    """End this driver's Ray connection: Ray then stops every task it submitted (none is left running)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.pop(STATE_ENV, None)
