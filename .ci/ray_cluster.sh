#!/usr/bin/env bash
# Start (or stop) a throwaway Ray cluster with Ray's token authentication on (a fresh token of its own, not
# ~/.ray's) and the dashboard on 127.0.0.1.
#   --nodes 1 (default): a head node on 127.0.0.1 with 2 CPUs.
#   --nodes 2: a head node with 1 CPU on this side of the private test network (.ci/test_network.sh, brought up
#     if it is not) and a worker node with 1 CPU inside its namespace, at its own address: the same venv, but
#     its own working directory and temp dir, and the launching side's pytest folders hidden under an empty
#     tmpfs (a machine that shares no files with the launching process; only the MLflow server, which must
#     listen on RUNNER_TEST_HOST, is reached over the link).
# Ray advertises those addresses only, but its gRPC servers listen on every interface of their node's network
# (Ray 2.60 has no setting for that): the worker's are inside the namespace, the head's are not, so run CI
# behind a firewall.
#   source .ci/ray_cluster.sh start [--nodes 2] -> exports RUNNER_TEST_RAY_ADDRESS, RUNNER_TEST_RAY_DASHBOARD,
#                                                  RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH for every client, and
#                                                  with two nodes RUNNER_TEST_RAY_NODE_NS (the worker's namespace)
#   .ci/ray_cluster.sh add-node    (the worker node again, e.g. after a test took it down)
#   .ci/ray_cluster.sh stop
set -euo pipefail
RAY_PORT="${RUNNER_RAY_PORT:-56379}"
RAY_DASHBOARD_PORT="${RUNNER_RAY_DASHBOARD_PORT:-58265}"
RAY_TEMP="${RUNNER_RAY_TEMP:-/tmp/runner-ci-ray}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

start() {
  local nodes=1
  if [ "${1:-}" = "--nodes" ]; then nodes="${2:?--nodes needs 1 or 2}"; fi
  case "$nodes" in 1|2) ;; *) echo "--nodes $nodes: 1 or 2" >&2; return 2 ;; esac
  stop
  rm -rf "$RAY_TEMP" && mkdir -p "$RAY_TEMP"
  python3 -c "import secrets; print(secrets.token_hex(32))" >"$RAY_TEMP/auth_token"
  chmod 600 "$RAY_TEMP/auth_token"
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RAY_TEMP/auth_token"
  local host=127.0.0.1 cpus=2
  if [ "$nodes" = 2 ]; then
    # shellcheck disable=SC1091
    source "$HERE/test_network.sh" up
    host="$RUNNER_TEST_HOST" cpus=1
  fi
  RAY_USAGE_STATS_ENABLED=0 ray start --head --node-ip-address="$host" --port="$RAY_PORT" --num-cpus="$cpus" \
      --num-gpus=0 --dashboard-host=127.0.0.1 --dashboard-port="$RAY_DASHBOARD_PORT" --temp-dir="$RAY_TEMP" \
      --disable-usage-stats >"$RAY_TEMP.log" 2>&1 || { tail -n 40 "$RAY_TEMP.log" >&2; return 1; }
  export RUNNER_TEST_RAY_ADDRESS="$host:$RAY_PORT"
  export RUNNER_TEST_RAY_DASHBOARD="http://127.0.0.1:$RAY_DASHBOARD_PORT"
  echo "ray head up at $RUNNER_TEST_RAY_ADDRESS"
  if [ "$nodes" = 2 ]; then
    add-node
    export RUNNER_TEST_RAY_NODE_NS="$RUNNER_TEST_NODE_NS"
  fi
}

add-node() {
  # shellcheck disable=SC1091
  source "$HERE/test_network.sh" up >/dev/null
  local work="$RAY_TEMP-node" hide
  hide="$(python3 -c 'import getpass, tempfile; print(f"{tempfile.gettempdir()}/pytest-of-{getpass.getuser()}")')"
  mkdir -p "$work/cwd" "$hide"
  ip netns exec "$RUNNER_TEST_NODE_NS" unshare --mount --propagation private env RAY_USAGE_STATS_ENABLED=0 \
      RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RAY_TEMP/auth_token" sh -c '
        mount -t tmpfs runner-ci-node "$1" && cd "$2/cwd" && exec "$3" start --address="$4" \
            --node-ip-address="$5" --num-cpus=1 --num-gpus=0 --temp-dir="$2/ray" --disable-usage-stats' \
      node "$hide" "$work" "$(command -v ray)" "$RUNNER_TEST_HOST:$RAY_PORT" "$RUNNER_TEST_NODE_HOST" \
      >"$work.log" 2>&1 || { tail -n 40 "$work.log" >&2; return 1; }
  echo "ray worker node up at $RUNNER_TEST_NODE_HOST (namespace $RUNNER_TEST_NODE_NS)"
}

stop() {
  ray stop --force >/dev/null 2>&1 || true  # every Ray process of this machine, the namespace's too
}

cmd="${1:-start}"
shift || true
"$cmd" "$@"
