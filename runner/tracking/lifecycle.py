"""Run lifecycle: signals become KILLED runs, exceptions FAILED runs with the error logged.

MLflow alone leaves a SIGTERM'd run RUNNING and marks an un-``with``ed failed run FINISHED at exit. A
signal handler raises at once (inside OmegaConf, SQLAlchemy, Hydra's config reader or a ``__del__``, as soon as
they return: ``UNINTERRUPTIBLE``), but an exception raised while the interpreter runs another finaliser (a GC
callback) is printed and swallowed; so the handler also records the request, long loops call ``check_stop()``,
which raises it again, and a tracked section that ends with the request still recorded raises it as it ends: a stop
is never lost.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from runner.tracking.store import when_unlocked

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from runner.tracking.logger import MLflowLogger

# SIGINT too: a process started in the background by a non-interactive shell inherits SIGINT as ignored,
# and Python then never raises KeyboardInterrupt; inside a tracked run Ctrl-C must always end it KILLED.
HANDLED_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                        if s)
_pending_stop: str | None = None


class Terminated(KeyboardInterrupt):
    """Raised on SIGINT/SIGTERM/SIGHUP inside a tracked run, so cleanup runs and the run ends KILLED."""


def check_stop() -> None:
    """Raise ``Terminated`` if a stop was requested (by a signal) and not yet handled. Raised here, in plain code,
    it is delivered: the request is cleared (a signal handler's own raise may land in a finaliser, which drops it)."""
    global _pending_stop
    if _pending_stop is not None:
        stop, _pending_stop = _pending_stop, None
        raise Terminated(stop)


# Code a stop must not interrupt midway. OmegaConf restores a config it was changing only on an Exception, so a
# KeyboardInterrupt raised inside it (Hydra composing the next job's config, say) leaves the config half-set, and
# the error that this causes later hides the stop (exit 1 and a traceback instead of one line and 143).
# SQLAlchemy, interrupted inside a statement, invalidates its connection without rolling back, and the sqlite file
# stays locked by it: ending the sweep's runs then fails ("database is locked") and leaves them RUNNING. Raised in
# the caller (MLflow's store), the stop goes through the store's session handling, which rolls back and closes.
# Hydra's reader of a packaged config (its own hydra/config.yaml, read again for every job a sweep composes) closes
# the file in a ``finally`` that a stop inside ``open`` leaves unbound: its UnboundLocalError hides the stop.
# Modules by their full dotted name or a package above it. Finalisers too (``__del__``, wherever it is): Python
# prints what one raises ("Exception ignored in", with its traceback) and goes on, as when tqdm's bar is freed the
# moment a model's training returns.
UNINTERRUPTIBLE = ("omegaconf", "sqlalchemy", "hydra._internal.core_plugins.importlib_resources_config_source")


def _uninterruptible(frame: Any) -> bool:
    module = str(frame.f_globals.get("__name__", ""))
    return frame.f_code.co_name == "__del__" or any(module == name or module.startswith(name + ".")
                                                    for name in UNINTERRUPTIBLE)


def _caller_outside(frame: Any) -> Any:
    """The innermost frame that called into ``UNINTERRUPTIBLE`` code, when ``frame`` runs inside it; else None."""
    caller, inside = None, False
    while frame is not None:
        if _uninterruptible(frame):
            inside, caller = True, None
        elif inside and caller is None:
            caller = frame
        frame = frame.f_back
    return caller if inside else None


def _raise_terminated(signum: int, frame: Any) -> None:
    """Record the stop and raise it here, or, inside ``UNINTERRUPTIBLE`` code, in its caller as soon as that code
    returns (a local trace function on the caller's frame, as debuggers set breakpoints: nothing else is traced
    meanwhile)."""
    global _pending_stop
    _pending_stop = stop = f"received {signal.Signals(signum).name}"
    caller = _caller_outside(frame)
    if caller is None:
        raise Terminated(stop)

    def raise_here(traced: Any, event: str, arg: Any) -> Any:
        if event in ("line", "return"):
            traced.f_trace = None
            sys.settrace(None)
            raise Terminated(stop)
        return raise_here

    caller.f_trace = raise_here
    sys.settrace(lambda *args: None)  # tracing on, for the caller's frame only (new frames get no local trace)


def stop_on_signals() -> None:
    """For the whole process (``python -m runner``): SIGINT, SIGTERM and SIGHUP raise ``Terminated`` wherever it
    is, between a sweep's jobs and inside Hydra too, so that the entry point ends what is running KILLED and
    exits ``exit_status`` (SIGTERM alone would otherwise end the process with its runs left RUNNING)."""
    if threading.current_thread() is threading.main_thread():
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, _raise_terminated)


def ignore_signals() -> None:
    """While a stopped process ends its runs: a second Ctrl-C must not interrupt the clean-up."""
    if threading.current_thread() is threading.main_thread():
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process stopped by it: 130 for Ctrl-C (SIGINT), 143 for
    SIGTERM, 129 for SIGHUP."""
    name = str(interrupt).removeprefix("received ") or "SIGINT"
    return 128 + int(getattr(signal, name, signal.SIGINT))


def interrupted(interrupt: KeyboardInterrupt) -> str:
    """What stopped the process, for its one line: ``received SIGTERM``, or Ctrl-C's."""
    return str(interrupt) or "received SIGINT (Ctrl-C)"


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``Terminated`` inside the block. A block that ends with a stop still
    recorded (its raise was swallowed, and no ``check_stop()`` came after) raises it as it ends; one that a stop
    ends has delivered it."""
    global _pending_stop
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in HANDLED_SIGNALS}
    try:
        yield
    except KeyboardInterrupt:
        _pending_stop = None
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    check_stop()


@contextlib.contextmanager
def tracked_run(logger: MLflowLogger) -> Iterator[Any]:
    """End the logger's active run FINISHED, FAILED (error logged as tag + artifact) or KILLED."""
    try:
        with signals_as_interrupts():
            yield logger
    except KeyboardInterrupt as interrupt:
        _record_error(logger, f"{type(interrupt).__name__}: {str(interrupt) or 'received SIGINT (Ctrl-C)'}", "")
        logger.end_run("KILLED")
        raise
    except BaseException as error:
        _record_error(logger, f"{type(error).__name__}: {error}", traceback.format_exc())
        logger.end_run("FAILED")
        raise
    else:
        logger.end_run("FINISHED")


def _record_error(logger: MLflowLogger, message: str, details: str) -> None:
    """Best effort: the run must still be ended even if the store refuses the error record."""
    with contextlib.suppress(Exception):
        logger.set_tags({"error": message[:1000]})
        if details:
            logger.log_text(details, "error.txt")


LOST_TAG = "runner.lost"


def close_lost_attempts(client: MlflowClient, experiment_id: str, parent_run_id: str, job_number: str,
                        rerun: Run) -> list[str]:
    """A job started again in the same sweep (Ray reruns a task whose worker died): its earlier attempts' runs,
    still RUNNING with no process behind them, end FAILED and tagged ``runner.lost`` naming the new attempt.
    Returns their run ids."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.sweep_id = '{parent_run_id}' and tags.job_number = '{job_number}' and attributes.status = 'RUNNING'"))
    lost = [r for r in runs if r.info.run_id != rerun.info.run_id]
    for run in lost:
        where = f"pid {run.data.tags.get('runner.pid', '?')} on {run.data.tags.get('runner.host', '?')}"
        if run.data.tags.get("runner.ray_node"):
            where += f", Ray node {run.data.tags['runner.ray_node']}"
        client.set_tag(run.info.run_id, LOST_TAG, f"its process ({where}) died mid-job; the job ran again as run "
                                                  f"{rerun.info.run_id}")
        client.set_terminated(run.info.run_id, "FAILED")
    return [r.info.run_id for r in lost]


def end_running_children(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str,
                         reason: str) -> list[str]:
    """A stopped sweep's children still RUNNING (their processes were stopped with it) end ``status``."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in runs:
        when_unlocked(client.set_tag, run.info.run_id, "error", reason[:1000])
        when_unlocked(client.set_terminated, run.info.run_id, status)
    return [r.info.run_name for r in runs]
