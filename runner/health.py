"""Fail fast on an unreachable tracking server (MLflow alone retries for about 4 minutes)."""

from __future__ import annotations

import urllib.error
import urllib.request

TIMEOUT_SECONDS = 5.0


def check_tracking_server(uri: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """For http(s) URIs, GET ``<uri>/health``; raise ConnectionError with a fix-it message if it fails."""
    if not uri.startswith(("http://", "https://")):
        return
    from runner.params import redact_uri

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"answered HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        problem = f"is unreachable ({getattr(error, 'reason', error)})"
    raise LookupError(f"tracking server {redact_uri(uri)} {problem}. Start it (mlflow server --host 127.0.0.1) "
                      "or use tracking=local / unset MLFLOW_TRACKING_URI.")
