"""Run lifecycle: signals become KILLED runs, exceptions FAILED runs with the error logged.

MLflow alone leaves a SIGTERM'd run RUNNING and marks an un-``with``ed failed run FINISHED at exit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import traceback
from collections.abc import Iterator
from typing import Any

from runner import interrupts
from runner.interrupts import Terminated

# SIGINT too: a process started in the background by a non-interactive shell inherits SIGINT as ignored,
# and Python then never raises KeyboardInterrupt; inside a tracked run Ctrl-C must always end it KILLED.
HANDLED_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                        if s)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        reason = f"received {signal.Signals(signum).name}"
        interrupts.request(reason)  # kept even if this raise lands in a finaliser and is swallowed
        raise Terminated(reason)

    previous = {sig: signal.signal(sig, handler) for sig in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        interrupts.clear()


@contextlib.contextmanager
def tracked_run(logger: Any) -> Iterator[Any]:
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


def _record_error(logger: Any, message: str, details: str) -> None:
    """Best effort: the run must still be ended even if the store refuses the error record."""
    with contextlib.suppress(Exception):
        logger.set_tags({"error": message[:1000]})
        if details:
            logger.log_text(details, "error.txt")
