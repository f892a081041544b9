"""A deferred run's writes at its end (``write_deferred``: files, then params, tags and metrics, then inputs), made
by the logging process or by ``RunWriter``: a second process that writes finished deferred runs into a local
MLflow store and ends them, while the launching process computes the next.

MLflow's sqlite store spends its time in Python (SQLAlchemy), under the GIL: a thread would not overlap it with
the next configuration's work, a process does. The launching process creates each run (it needs the run's id)
and hands over what ``MLflowLogger.defer_writes`` kept for its end; at most ``ahead`` runs wait for the writer,
so a stop finds little left to write. The process ignores SIGINT, SIGTERM and SIGHUP: Ctrl-C reaches a terminal's
whole process group, and the launching process, which handles the stop, waits for the runs handed over
(``RunWriter.close``) and the sweep's own clean-up ends the rest.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections import deque
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.tracking.sanitize import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH
from runner.tracking.store import when_unlocked

if TYPE_CHECKING:
    from collections.abc import Iterator
    from concurrent.futures import Future

    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput

AHEAD = 16  # runs handed over and not yet written, at most (a stop waits for them: about a second)
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_client: MlflowClient | None = None  # the writer process's own client


class RunWriter:
    """``submit(run_id, pending, status)`` each deferred run's end; ``close()`` once: waits for every run to be
    written, then raises the first write that failed (with the writer's traceback)."""

    def __init__(self, tracking_uri: str, ahead: int = AHEAD) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.ahead = ahead
        self._waiting: deque[Future[None]] = deque()
        self._failed: BaseException | None = None
        with stops_held_back():  # and ignored in the spawned process
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=open_store, initargs=(tracking_uri,))
            self._waiting.append(self._pool.submit(int))  # the process starts now, not at the first run's end

    def submit(self, run_id: str, pending: dict[str, Any], status: str) -> None:
        """Hand over a run's deferred writes and its end, then wait while more than ``ahead`` runs wait (a stop
        meanwhile finds this run handed over already)."""
        self._waiting.append(self._pool.submit(end_run, run_id, pending, status))
        while len(self._waiting) > self.ahead:
            self._settle(self._waiting.popleft())

    def check(self) -> None:
        """Raise the first failed write now, if the writer has reported one."""
        while self._waiting and self._waiting[0].done():
            self._settle(self._waiting.popleft())
        if self._failed is not None:
            raise self._failed

    def close(self, raise_failure: bool = True) -> None:
        """Wait for every run handed over to be written and ended, stop the process, and raise the first failed
        write (``raise_failure``); while another exception is on its way out, one line says it instead."""
        try:
            while self._waiting:
                self._settle(self._waiting.popleft())
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._failed is not None:
            if raise_failure:
                raise self._failed
            print(f"warning: a run's writes failed, so it ended FAILED (its 'error' tag says why): "
                  f"{type(self._failed).__name__}: {self._failed}", file=sys.stderr)

    def _settle(self, future: Future[None]) -> None:
        error = future.exception()
        if error is not None and self._failed is None:
            self._failed = error


def spawn_leaves_main_alone() -> bool:
    """Whether a spawned process leaves this process's ``__main__`` alone, as it does for ``python -m package``
    (a package's ``__main__``) and for a main with no file (``-c``, a notebook). A script's top level, or a module's
    run with ``-m``, would run again in it, unguarded by ``if __name__ == "__main__"``: a second sweep."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return name == "__main__" or name.endswith(".__main__")
    return getattr(main, "__file__", None) is None


@contextmanager
def stops_held_back() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP ignored and blocked while a process is started: it inherits both (an ignored
    signal stays ignored through exec, and Python leaves it so), and one that reaches this process meanwhile is
    held pending by the block (Linux keeps a blocked signal even while it is ignored) and handled after, except in
    the instant multiprocessing's resource tracker starts (once per process: it unblocks SIGINT and SIGTERM). Only
    the main thread sets signal handlers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def open_store(tracking_uri: str) -> None:
    """The writer process's client on the store (created by the launching process already)."""
    global _client
    from mlflow import MlflowClient

    _client = MlflowClient(tracking_uri)


def end_run(run_id: str, pending: dict[str, Any], status: str) -> None:
    """In the writer process: the run's deferred writes, then its end: FAILED when the writes failed (a run
    without what it computed is not FINISHED: a resume would stand on it)."""
    assert _client is not None
    try:
        write_deferred(_client, run_id, pending)
    except Exception as error:
        status = "FAILED"
        why = f"its writes failed: {type(error).__name__}: {error}"
        with suppress(Exception):  # why, on the run itself: its launching process may not say it (a stop)
            when_unlocked(_client.set_tag, run_id, "error", why[:1000])
        raise
    finally:
        when_unlocked(_client.set_terminated, run_id, status)


def write_deferred(client: MlflowClient, run_id: str, pending: dict[str, Any]) -> None:
    """A ``defer_writes`` run's files in one upload, then its params, tags and metrics in as few ``log_batch``
    calls as MLflow's limits allow (usually one), then its inputs; its staged files are removed after."""
    try:
        if any(Path(pending["files"]).iterdir()):  # first: MLflow reads the run to find its artifact store
            client.log_artifacts(run_id, pending["files"])  # (its whole record: still small now)
        params, tags, metrics = list(pending["params"].values()), list(pending["tags"].values()), pending["metrics"]
        while params or tags or metrics:
            some_params, params = params[:MAX_PARAMS_PER_BATCH], params[MAX_PARAMS_PER_BATCH:]
            some_tags, tags = tags[:MAX_PARAMS_PER_BATCH], tags[MAX_PARAMS_PER_BATCH:]
            room = MAX_METRICS_PER_BATCH - len(some_params) - len(some_tags)  # entities per request
            some_metrics, metrics = metrics[:room], metrics[room:]
            when_unlocked(client.log_batch, run_id, metrics=some_metrics, params=some_params, tags=some_tags,
                          synchronous=True)
        if pending["inputs"]:
            link_inputs(client, run_id, pending["inputs"])
    finally:
        shutil.rmtree(pending["files"], ignore_errors=True)


def link_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    """``log_inputs``, once more when the store refused a dataset as already there: two jobs that logged the
    same data at the same moment both inserted it (MLflow checks, then inserts); the second call links it."""
    from mlflow.exceptions import MlflowException

    try:
        when_unlocked(client.log_inputs, run_id, datasets=inputs)
    except MlflowException as error:
        text = str(error)
        if "dataset" not in text or not ("duplicate key" in text or "UNIQUE constraint failed" in text):
            raise
        when_unlocked(client.log_inputs, run_id, datasets=inputs)
