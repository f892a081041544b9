"""The documented import of the seed API: ``from runner.logger import MLflowLogger``."""

from runner.tracking.logger import MLflowLogger, NoActiveRunError
from runner.tracking.sanitize import REDACTED
from runner.tracking.store import resolve_tracking_uri

__all__ = ["MLflowLogger", "NoActiveRunError", "REDACTED", "resolve_tracking_uri"]
