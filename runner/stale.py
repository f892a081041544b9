"""Runs left RUNNING by a hard kill (SIGKILL, OOM): find them, and mark them KILLED on request.

A run started here records its host and pid (tags ``runner.host``/``runner.pid``); a RUNNING run whose
process no longer exists on this host is stale. Runs from other hosts count only with ``--older-than``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_stale(logger: Any, older_than_hours: float | None = None) -> list[tuple[Any, str]]:
    runs = logger.client.search_runs([logger.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                     max_results=5000)
    host, now_ms = socket.gethostname(), time.time() * 1000
    stale = []
    for run in runs:
        tags = run.data.tags
        pid = tags.get("runner.pid")
        if tags.get("runner.host") == host and pid and pid.isdigit() and not _alive(int(pid)):
            stale.append((run, f"process {pid} on this host is gone"))
        elif older_than_hours is not None and now_ms - run.info.start_time > older_than_hours * 3.6e6:
            stale.append((run, f"RUNNING for more than {older_than_hours} h"))
    return stale


def stale_runs(logger: Any, older_than_hours: float | None, mark: bool, as_json: bool = False) -> int:
    found = find_stale(logger, older_than_hours)
    if mark:
        for run, _ in found:
            logger.client.set_terminated(run.info.run_id, "KILLED")
            logger.client.set_tag(run.info.run_id, "error", "marked KILLED by runner.report --stale")
    rows = [{"run_id": r.info.run_id, "run_name": r.info.run_name, "reason": why,
             "action": "marked KILLED" if mark else "dry run (add --mark)"} for r, why in found]
    if as_json:
        print(json.dumps({"stale_runs": rows}, indent=2))
    elif not rows:
        print("no stale runs")
    else:
        for row in rows:
            print(f"{row['run_id']}  {row['run_name']}  {row['reason']}  -> {row['action']}")
    return 0
