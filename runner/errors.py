"""The user-error family: a mistake in what a user gave (config, data, command line, a run id). Exactly these
print one line and exit 2; any other exception is a bug (ours or in a user's strategy): its traceback, exit 1,
the run FAILED.

Each class also derives from the built-in it stands for, so code that catches ``ValueError`` around the seed
API (``runner.logger.MLflowLogger``) keeps working; the runner itself only ever catches ``UserError``. A user's
own strategy or data source raises ``ConfigError`` for a parameter it does not allow.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message names the key, the bad value and what is allowed."""


class ConfigError(UserError, ValueError):
    """A value that is not allowed (a parameter, a setting, a command-line option)."""


class ConfigTypeError(UserError, TypeError):
    """A value of the wrong kind, or a key that does not exist."""


class NotFoundError(UserError, LookupError):
    """A name, file, run, experiment or server that is not there."""


class DataError(ConfigError):
    """Bad market data or data config; the message names the file or key, what is wrong and how to fix it."""
