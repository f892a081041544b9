#!/usr/bin/env bash
# Start (or stop) a throwaway Ray head node with 2 CPUs, Ray's token authentication on (a fresh token of its
# own, not ~/.ray's) and the dashboard on 127.0.0.1. Ray itself advertises and binds its other ports on the
# machine's address, never loopback only (ray.services.resolve_ip_for_localhost): run CI behind a firewall.
#   source .ci/ray_cluster.sh start   -> exports RUNNER_TEST_RAY_ADDRESS, RUNNER_TEST_RAY_DASHBOARD, and
#                                        RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH for every client
#   .ci/ray_cluster.sh stop
set -euo pipefail
RAY_PORT="${RUNNER_RAY_PORT:-56379}"
RAY_DASHBOARD_PORT="${RUNNER_RAY_DASHBOARD_PORT:-58265}"
RAY_TEMP="${RUNNER_RAY_TEMP:-/tmp/runner-ci-ray}"

start() {
  ray stop --force >/dev/null 2>&1 || true
  rm -rf "$RAY_TEMP" && mkdir -p "$RAY_TEMP"
  python3 -c "import secrets; print(secrets.token_hex(32))" >"$RAY_TEMP/auth_token"
  chmod 600 "$RAY_TEMP/auth_token"
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RAY_TEMP/auth_token"
  RAY_USAGE_STATS_ENABLED=0 ray start --head --node-ip-address=127.0.0.1 --port="$RAY_PORT" --num-cpus=2 \
      --num-gpus=0 --dashboard-host=127.0.0.1 --dashboard-port="$RAY_DASHBOARD_PORT" --temp-dir="$RAY_TEMP" \
      --disable-usage-stats >"$RAY_TEMP.log" 2>&1 || { tail -n 40 "$RAY_TEMP.log" >&2; return 1; }
  export RUNNER_TEST_RAY_ADDRESS="127.0.0.1:$RAY_PORT"
  export RUNNER_TEST_RAY_DASHBOARD="http://127.0.0.1:$RAY_DASHBOARD_PORT"
  echo "ray head up at $RUNNER_TEST_RAY_ADDRESS"
}

stop() {
  ray stop --force >/dev/null 2>&1 || true
}

"${1:-start}"
