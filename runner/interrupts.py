"""A process-wide record of a stop request (SIGINT/SIGTERM/SIGHUP), checked at safe points.

The signal handler raises at once, but a Python exception raised while the interpreter runs a finaliser
(``__del__``, a GC callback) is printed and swallowed; the run would then train on. The handler also
records the request here, and long loops call ``check()`` so the stop is never lost.
"""

from __future__ import annotations

_pending: str | None = None


class Terminated(KeyboardInterrupt):
    """Raised on SIGINT/SIGTERM/SIGHUP inside a tracked run, so cleanup runs and the run ends KILLED."""


def request(reason: str) -> None:
    global _pending
    _pending = reason


def clear() -> None:
    global _pending
    _pending = None


def check() -> None:
    """Raise ``Terminated`` if a stop was requested and not yet handled."""
    if _pending is not None:
        raise Terminated(_pending)
