"""A sweep's bootstrap tests in a second process, started with the sweep: importing ``arch`` (1.3-1.6 s, scipy.stats
most of it) then overlaps the jobs on another core instead of delaying the winner. Any failure there (the process
gone, an error in a test) runs the same function in this process, which gives the same seeded numbers or raises
the error with its traceback here."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

SERVED = ("reality_checks", "sharpe_interval")  # runner.bootstrap's functions a sweep's end calls


class BootstrapWorker:
    """``runner.bootstrap.reality_checks`` and ``sharpe_interval``, computed by a process that imported ``arch``
    while the sweep ran. ``close()`` ends it (the sweep's end and a stopped sweep's cleanup call it)."""

    def __init__(self, process: subprocess.Popen[bytes] | None) -> None:
        self._process = process

    @classmethod
    def start(cls) -> BootstrapWorker:
        """The process, importing at once; with one CPU (nothing to overlap) or where it cannot start, every call
        runs in this process."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if cpus < 2:
            return cls(None)
        try:
            process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            process = None
        return cls(process)

    def reality_checks(self, benchmark: np.ndarray, trials: np.ndarray) -> dict[str, float]:
        return self._call("reality_checks", benchmark, trials)

    def sharpe_interval(self, returns: np.ndarray, periods_per_year: float) -> list[float]:
        return self._call("sharpe_interval", returns, periods_per_year)

    def _call(self, name: str, *args: object) -> Any:
        process = self._process
        if process is not None and process.stdin is not None and process.stdout is not None:
            try:
                pickle.dump((name, args), process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                process.stdin.flush()
                done, value = pickle.load(process.stdout)
                if done:
                    return value
            except (OSError, EOFError, ValueError, pickle.UnpicklingError):
                pass
            self.close()  # gone or failed: this process computes, and every later call too
        import runner.bootstrap as bootstrap

        return getattr(bootstrap, name)(*args)

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def serve() -> None:
    """The worker: import, then answer pickled ``(name, args)`` calls on stdin until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's: its cleanup ends this process
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever an import prints cannot corrupt the replies
    import arch.bootstrap  # noqa: F401 - the import this process exists to take off the sweep's path

    import runner.bootstrap as bootstrap

    requests = sys.stdin.buffer
    while True:
        try:
            name, args = pickle.load(requests)
        except EOFError:
            return
        try:
            if name not in SERVED:
                raise ValueError(f"not served: {name}")
            reply = (True, getattr(bootstrap, name)(*args))
        except Exception:  # noqa: BLE001 - the caller computes it again and raises it there
            reply = (False, None)
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    serve()
