"""The tracking store at scale: a PostgreSQL-backed MLflow server holding 100,000 runs shaped like ours, and the
queries a user waits on, timed against it.

    source .ci/tracking_server.sh start      # or any server: --server URI --db postgresql://... (its database)
    python bench/store_scale.py [--runs 100000] [--repeat 10] [--statistics 10000] [--plan-cache-mode MODE]

How the store is filled: one real sweep through the CLI (``+strategy=momentum model=none data=sp500``, 10 jobs
and one whose parameter is invalid: a parent, 10 FINISHED children, 1 FAILED child, with every param, metric,
tag, dataset input and parent link a run of ours logs), then its rows copied in SQL (``INSERT ... SELECT`` over
``generate_series``), as many times as it takes, into the same experiment: each copy is another sweep (its own
run ids, sweep name, config hashes, start times an hour apart; parent links, ``sweep_id`` and ``best_run_id``
point inside the copy; metrics shifted a little per copy so that ranks differ). Copying rows is ~1000x faster
than MLflow's APIs (35-44 ms per run on this machine) and gives exactly the shape the APIs write. Artifacts are
not copied (no timed query reads one). Reused when the experiment already holds ``--runs`` runs.

Timed (median of ``--repeat``, after one warm-up), in this process with the project's own functions and as a
user runs them (a subprocess: the CLI's wall time, Python's start and imports included):
- ``get_best_run``: the experiment's best run by val_sharpe_ratio, ranked both ways (``runner.tracking.queries``):
  narrowing (the default for a server) and in the store (``RUNNER_SERVER_DATABASE=postgresql``);
- ``runner.report`` top 10: the ranking (both ways), and the deflated Sharpe over the experiment's trials on the top
  run's data;
- ``runner.report --sweep NAME``: one sweep name's runs and trials;
- the experiment-wide trials (``runner.report --ledger``);
- ``runner.clean --status FAILED`` (the dry run), and beside it reading every run of the store (what its plan
  did until it searched only what decides);
- a sweep job's resume lookup: a FINISHED run of its config hash in its sweep.
The CLI cases run with ``RUNNER_SERVER_DATABASE=postgresql``. ``--indexes``, ``--statistics`` and
``--plan-cache-mode`` tune the database before timing (what the README's sizing advice was drawn from).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXPERIMENT = "store_scale"
SEED_SWEEP = "seed"
ID_TAGS = ("mlflow.parentRunId", "sweep_id", "best_run_id", "resumed_from")


def seed(server: str, work: Path) -> None:
    """One real sweep of 11 jobs (one FAILED) through the CLI."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    done = subprocess.run([sys.executable, "-m", "runner", "-m", "+strategy=momentum", "model=none", "data=sp500",
                           "strategy.lookback=0,5,10,15,20,25,30,40,50,60,80", "tracking=server",
                           f"tracking.uri={server}", f"experiment_name={EXPERIMENT}", f"sweep_name={SEED_SWEEP}"],
                          cwd=work, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: the sweep names its failed job
        raise SystemExit(done.stderr[-3000:])


COPY_SQL = """
CREATE TEMP TABLE copies AS SELECT k FROM generate_series(%(first)s::int, %(last)s::int) AS k;
CREATE TEMP TABLE seed_runs AS SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
  WHERE r.experiment_id = %(experiment)s AND t.key = 'sweep_name' AND t.value = %(seed)s;
CREATE TEMP TABLE mapping AS
  SELECT s.run_uuid AS old, c.k, md5(s.run_uuid || ':' || c.k) AS new FROM seed_runs s CROSS JOIN copies c;
INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time, end_time,
                  source_version, lifecycle_stage, artifact_uri, experiment_id, deleted_time)
  SELECT m.new, r.name, r.source_type, r.source_name, r.entry_point_name, r.user_id, r.status,
         r.start_time - m.k::bigint * 3600000, r.end_time - m.k::bigint * 3600000, r.source_version, r.lifecycle_stage,
         replace(r.artifact_uri, r.run_uuid, m.new), r.experiment_id, r.deleted_time
  FROM runs r JOIN mapping m ON m.old = r.run_uuid;
INSERT INTO tags (key, value, run_uuid)
  SELECT t.key,
         CASE WHEN t.key = ANY(%(id_tags)s) THEN coalesce(md5(t.value || ':' || m.k), t.value)
              WHEN t.key = 'sweep_name' THEN t.value || '_' || m.k
              WHEN t.key = 'config_hash' THEN md5(t.value || ':' || m.k)
              ELSE t.value END, m.new
  FROM tags t JOIN mapping m ON m.old = t.run_uuid;
INSERT INTO params (key, value, run_uuid)
  SELECT p.key, p.value, m.new FROM params p JOIN mapping m ON m.old = p.run_uuid;
INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
  SELECT x.key, x.value + ((m.k * 7919) % 1000 - 500) * 1e-5, x.timestamp, m.new, x.step, x.is_nan
  FROM metrics x JOIN mapping m ON m.old = x.run_uuid;
INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
  SELECT x.key, x.value + ((m.k * 7919) % 1000 - 500) * 1e-5, x.timestamp, x.step, x.is_nan, m.new
  FROM latest_metrics x JOIN mapping m ON m.old = x.run_uuid;
CREATE TEMP TABLE input_map AS
  SELECT i.input_uuid AS old, md5(i.input_uuid || ':' || m.k) AS new, m.new AS run, i.source_type, i.source_id,
         i.destination_type, i.step
  FROM inputs i JOIN mapping m ON m.old = i.destination_id;
INSERT INTO inputs (input_uuid, source_type, source_id, destination_type, destination_id, step)
  SELECT new, source_type, source_id, destination_type, run, step FROM input_map;
INSERT INTO input_tags (input_uuid, name, value)
  SELECT im.new, t.name, t.value FROM input_tags t JOIN input_map im ON im.old = t.input_uuid;
"""


def fill(server: str, db: str, runs: int, work: Path) -> str:
    """The experiment's id, holding at least ``runs`` runs (filled when it holds fewer)."""
    import psycopg
    from mlflow import MlflowClient

    client = MlflowClient(server)
    found = client.get_experiment_by_name(EXPERIMENT)
    with psycopg.connect(db, autocommit=True) as connection:

        def count(experiment_id: str) -> int:
            return connection.execute("SELECT count(*) FROM runs WHERE experiment_id = %s",
                                      (int(experiment_id),)).fetchone()[0]
        if found is None:
            start = time.perf_counter()
            seed(server, work)
            found = client.get_experiment_by_name(EXPERIMENT)
            print(f"seeded {count(found.experiment_id)} runs through the CLI in {time.perf_counter() - start:.1f} s")
        total = count(found.experiment_id)
        seeded = len(client.search_runs([found.experiment_id], f"tags.sweep_name = '{SEED_SWEEP}'"))
        if total >= runs:
            return found.experiment_id
        start = time.perf_counter()
        first, last = total // seeded, -(-runs // seeded) - 1  # copies 1.. are the seed's copies
        values = {"first": first, "last": last, "experiment": int(found.experiment_id), "id_tags": list(ID_TAGS),
                  "seed": SEED_SWEEP}
        with connection.transaction():
            for statement in filter(str.strip, COPY_SQL.split(";")):  # without values, % is a plain modulo
                connection.execute(statement, values if "%(" in statement else None)
        connection.execute("ANALYZE")
        print(f"copied them {last - first + 1} times in SQL in {time.perf_counter() - start:.1f} s: "
              f"{count(found.experiment_id)} runs")
        return found.experiment_id


INDEXES = {"runner_latest_metrics_key_value": "latest_metrics (key, value)",
           "runner_tags_key_value": "tags (key, value)"}


def indexes(db: str, what: str, statistics: int | None, plan_cache_mode: str | None) -> None:
    """Add or drop our two indexes; set the statistics target of ``latest_metrics.value`` (-1: the default, 100)
    and the database's ``plan_cache_mode`` (for new connections: restart the MLflow server after changing it)."""
    import psycopg

    with psycopg.connect(db, autocommit=True) as connection:
        if plan_cache_mode is not None:
            from psycopg import sql

            database = connection.execute("SELECT current_database()").fetchone()[0]
            connection.execute(sql.SQL("ALTER DATABASE {} SET plan_cache_mode = {}").format(
                sql.Identifier(database), sql.SQL(plan_cache_mode)))  # one of argparse's choices
            print(f"plan_cache_mode = {plan_cache_mode} for new connections: restart the MLflow server, then run "
                  "this again")
        for name, on in INDEXES.items():
            if what == "add":
                connection.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")
            elif what == "drop":
                connection.execute(f"DROP INDEX IF EXISTS {name}")
        if statistics is not None:
            connection.execute(f"ALTER TABLE latest_metrics ALTER COLUMN value SET STATISTICS {int(statistics)}")
        connection.execute("ANALYZE")
        present = [row[0] for row in connection.execute("SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)",
                                                        (list(INDEXES),))]
        target = connection.execute("SELECT attstattarget FROM pg_attribute WHERE attname = 'value' AND "
                                    "attrelid = 'latest_metrics'::regclass").fetchone()[0]
        mode = connection.execute("SHOW plan_cache_mode").fetchone()[0]
    print(f"indexes of ours present: {', '.join(present) or 'none'}; latest_metrics.value statistics target: "
          f"{target if target not in (None, -1) else 'default (100)'}; plan_cache_mode (a new connection's): {mode}")


def retag_oldest(db: str, experiment_id: str, runs: int, version: str) -> int:
    """Tag the ``runs`` earliest FINISHED runs' engine version as ``version`` (``--older``: a store after an engine
    bump holds its older runs first); returns how many were retagged."""
    import psycopg

    from runner.tracking.queries import ENGINE_VERSION_TAG

    with psycopg.connect(db, autocommit=True) as connection:
        return connection.execute(
            "UPDATE tags SET value = %s WHERE key = %s AND run_uuid IN (SELECT run_uuid FROM runs WHERE experiment_id "
            "= %s AND status = 'FINISHED' ORDER BY start_time LIMIT %s)",
            (version, ENGINE_VERSION_TAG, int(experiment_id), runs)).rowcount


class TooSlow(BaseException):  # noqa: N818 - not an Exception: MLflow's client wraps every Exception
    """A case ran past the cap."""


def timed(what: Callable[[], object], repeat: int, cap: float) -> str:
    """The median of ``repeat`` timings after a warm-up; one timing when that one took over a second, and
    ``> cap`` when it did not end within ``cap`` seconds."""
    def stop(*_: object) -> None:
        raise TooSlow

    signal.signal(signal.SIGALRM, stop)
    times = []
    try:
        for _ in range(repeat + 1):
            signal.setitimer(signal.ITIMER_REAL, cap)
            start = time.perf_counter()
            what()
            times.append(time.perf_counter() - start)
            signal.setitimer(signal.ITIMER_REAL, 0)
            if times[0] > 1:
                return f"{times[0]:8.2f} s (one timing)"
    except TooSlow:
        time.sleep(30)  # the server finishes the page it was reading before the next case is timed
        return f"  > {cap:.0f} s (stopped)"
    return f"{statistics.median(times[1:]):8.3f} s"


def cli(args: list[str], server: str, work: Path) -> Callable[[], object]:
    from runner.tracking.queries import SERVER_DATABASE_ENV

    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": server, SERVER_DATABASE_ENV: "postgresql"}

    def run() -> None:
        # at the cap, TooSlow interrupts the wait, and subprocess.run kills the child
        done = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=10,
                        help="timings per case after a warm-up; past 5 a search is a prepared statement on the "
                             "server's connection (psycopg), and PostgreSQL may switch it to a generic plan")
    parser.add_argument("--cap", type=float, default=120, help="stop a case after this many seconds")
    parser.add_argument("--indexes", choices=("keep", "add", "drop"), default="keep",
                        help="add (or drop) the two indexes one would try first: latest_metrics (key, value) and "
                             "tags (key, value)")
    parser.add_argument("--statistics", type=int, default=None,
                        help="set the statistics target of latest_metrics.value (PostgreSQL's default: 100; -1 "
                             "restores it)")
    parser.add_argument("--plan-cache-mode", choices=("auto", "force_custom_plan", "force_generic_plan"),
                        help="set the database's plan_cache_mode (then restart the MLflow server)")
    parser.add_argument("--older", type=int, default=0,
                        help="time the cases with this many of the earliest finished runs tagged engine version 1 "
                             "(as after an engine bump), retagged back at the end")
    parser.add_argument("--server", default=os.environ.get("RUNNER_TEST_SERVER_URI"))
    parser.add_argument("--db", default=os.environ.get("RUNNER_TEST_SERVER_DB"),
                        help="the server's own database (to copy rows)")
    args = parser.parse_args()
    if not args.server or not args.db:
        raise SystemExit("needs --server and --db (or source .ci/tracking_server.sh start)")
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from runner.engine import ENGINE_VERSION
    from runner.sweeps.ledger import experiment_ledger, sweep_ledger
    from runner.tracking.cleanup import all_runs, parse_statuses, plan_cleanup
    from runner.tracking.queries import best_run, count_older, search_ranked, version_filter

    work = Path(tempfile.mkdtemp(prefix="store_scale_"))
    experiment_id = fill(args.server, args.db, args.runs, work)
    indexes(args.db, args.indexes, args.statistics, args.plan_cache_mode)
    client = MlflowClient(args.server)
    experiment = client.get_experiment(experiment_id)
    sweep = f"{SEED_SWEEP}_7"
    child = client.search_runs([experiment_id], f"tags.sweep_name = '{sweep}' and attributes.status = 'FINISHED'",
                               max_results=1)[0]
    top = search_ranked(client, [experiment_id], "val_sharpe_ratio", "max", version_filter(None), 10, in_store=True)
    digest = top[0].data.tags["data_digest"]
    resume = version_filter(f"tags.config_hash = '{child.data.tags['config_hash']}' and attributes.status = "
                            f"'FINISHED' and tags.sweep_name = '{sweep}'")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("get_best_run (experiment), narrowing", lambda: best_run(client, [experiment_id], "val_sharpe_ratio", "max",
                                                                   in_store=False)),
        ("get_best_run (experiment), ranked in the store", lambda: best_run(
            client, [experiment_id], "val_sharpe_ratio", "max", in_store=True)),
        ("report top 10: ranking, narrowing", lambda: search_ranked(
            client, [experiment_id], "val_sharpe_ratio", "max", version_filter(None), 10, in_store=False)),
        ("report top 10: ranking, in the store", lambda: search_ranked(
            client, [experiment_id], "val_sharpe_ratio", "max", version_filter(None), 10, in_store=True)),
        ("older-engine count (part of get_best_run)", lambda: count_older(client, [experiment_id],
                                                                          "val_sharpe_ratio")),
        ("report top 10: trials on its data", lambda: experiment_ledger(client, experiment_id, None, digest)),
        ("report --sweep: the sweep's trials", lambda: sweep_ledger(client, experiment_id, sweep)),
        ("clean --status FAILED: the plan", lambda: plan_cleanup(client, [experiment], parse_statuses("FAILED"),
                                                                 None, None)),
        ("clean: every run of the store (how its plan read)", lambda: all_runs(client, [
            e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)], deleted_too=True)),
        ("resume lookup (a job's config hash)", lambda: client.search_runs([experiment_id], resume, max_results=1)),
        ("CLI: runner.report --top 10", cli(["-m", "runner.report", "--experiment", EXPERIMENT, "--top", "10"],
                                            args.server, work)),
        ("CLI: runner.report --sweep NAME", cli(["-m", "runner.report", "--experiment", EXPERIMENT, "--sweep", sweep],
                                                args.server, work)),
        ("CLI: runner.report --ledger", cli(["-m", "runner.report", "--experiment", EXPERIMENT, "--ledger", "--json"],
                                            args.server, work)),
        ("CLI: runner.clean --status FAILED", cli(["-m", "runner.clean", "--status", "FAILED", "--experiment",
                                                   EXPERIMENT, "--json"], args.server, work)),
        ("CLI: python -c 'import mlflow' (the floor)", cli(["-c", "import mlflow"], args.server, work)),
    ]
    older = retag_oldest(args.db, experiment_id, args.older, "1") if args.older else 0
    print(f"{args.runs}+ runs in experiment {EXPERIMENT!r} on {args.server}, {older} of them tagged engine version 1; "
          f"median of {args.repeat}")
    try:
        for name, what in cases:
            print(f"  {name:<52} {timed(what, args.repeat, args.cap)}", flush=True)
    finally:
        if older:
            retag_oldest(args.db, experiment_id, args.older, str(ENGINE_VERSION))


if __name__ == "__main__":
    main()
