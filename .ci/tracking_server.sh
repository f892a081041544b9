#!/usr/bin/env bash
# Start (or stop) a throwaway PostgreSQL cluster on 127.0.0.1 and an MLflow server on it, bound to RUNNER_TEST_HOST
# (127.0.0.1 unless .ci/test_network.sh set it: this side of the private test network, where a worker node in its
# namespace reaches the server).
#   source .ci/tracking_server.sh start   -> exports RUNNER_TEST_SERVER_URI, _DB and _ARTIFACTS, and
#                                            RUNNER_SERVER_DATABASE=postgresql
#   .ci/tracking_server.sh stop
set -euo pipefail
STATE="${RUNNER_SERVER_STATE:-/tmp/runner-ci-server}"
PG_PORT="${RUNNER_PG_PORT:-55432}"
MLFLOW_PORT="${RUNNER_MLFLOW_PORT:-55000}"
HOST="${RUNNER_TEST_HOST:-127.0.0.1}"

pg_bin() {
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1
}

start() {
  local bin; bin="$(pg_bin)"
  rm -rf "$STATE" && mkdir -p "$STATE/artifacts"
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  mkdir -p "$STATE/pg" && chown postgres "$STATE/pg"
  su postgres -s /bin/sh -c "$bin/initdb -D $STATE/pg -A trust -U postgres -E UTF8" >"$STATE/initdb.log"
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $STATE/pg -w -l $STATE/pg/server.log \
      -o '-c listen_addresses=127.0.0.1 -p $PG_PORT -k $STATE/pg' start" >/dev/null
  su postgres -s /bin/sh -c "$bin/createdb -h 127.0.0.1 -p $PG_PORT -U postgres mlflow"
  setsid mlflow server --backend-store-uri "postgresql://postgres@127.0.0.1:$PG_PORT/mlflow" \
      --artifacts-destination "$STATE/artifacts" --host "$HOST" --port "$MLFLOW_PORT" --workers 2 \
      >"$STATE/mlflow.log" 2>&1 &
  echo $! >"$STATE/mlflow.pid"
  for _ in $(seq 1 120); do
    if python3 -c "import urllib.request as u; u.urlopen('http://$HOST:$MLFLOW_PORT/health', timeout=2)" \
        >/dev/null 2>&1; then
      export RUNNER_TEST_SERVER_URI="http://$HOST:$MLFLOW_PORT"
      export RUNNER_TEST_SERVER_DB="postgresql://postgres@127.0.0.1:$PG_PORT/mlflow"  # for mlflow gc
      export RUNNER_TEST_SERVER_ARTIFACTS="$STATE/artifacts"
      export RUNNER_SERVER_DATABASE=postgresql  # rankings against this server sort in PostgreSQL (README)
      echo "tracking server up at $RUNNER_TEST_SERVER_URI"
      return 0
    fi
    sleep 1
  done
  echo "tracking server did not come up; log:" >&2
  tail -n 50 "$STATE/mlflow.log" >&2
  return 1
}

stop() {
  local bin; bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [ -f "$STATE/mlflow.pid" ]; then kill -- -"$(cat "$STATE/mlflow.pid")" 2>/dev/null || kill "$(cat "$STATE/mlflow.pid")" 2>/dev/null || true; fi
  if [ -n "$bin" ] && [ -d "$STATE/pg" ]; then su postgres -s /bin/sh -c "$bin/pg_ctl -D $STATE/pg -m fast stop" >/dev/null 2>&1 || true; fi
}

"${1:-start}"
