#!/usr/bin/env bash
# A private test network on this machine (root only): a network namespace, a second machine's own network stack,
# joined to this one by a veth pair. This side gets 10.77.0.1, the namespace 10.77.0.2 (a /30 nothing routes
# to; RUNNER_TEST_NET changes the prefix); the namespace has nothing else but its loopback.
#   source .ci/test_network.sh up   -> exports RUNNER_TEST_HOST (this side), RUNNER_TEST_NODE_HOST and
#                                      RUNNER_TEST_NODE_NS (the namespace's name, for ip netns exec)
#   .ci/test_network.sh down
set -euo pipefail
NET="${RUNNER_TEST_NET:-10.77.0}"
NS="${RUNNER_TEST_NODE_NS:-runner-ci-node1}"
LINK="rci-host"  # this side's end of the pair; the namespace's end is rci-node

up() {
  if ! ip netns list | grep -qw "$NS"; then
    ip netns add "$NS"
    ip link add "$LINK" type veth peer name rci-node
    ip link set rci-node netns "$NS"
    ip addr add "$NET.1/30" dev "$LINK" && ip link set "$LINK" up
    ip netns exec "$NS" ip addr add "$NET.2/30" dev rci-node
    ip netns exec "$NS" ip link set rci-node up
    ip netns exec "$NS" ip link set lo up
  fi
  export RUNNER_TEST_HOST="$NET.1" RUNNER_TEST_NODE_HOST="$NET.2" RUNNER_TEST_NODE_NS="$NS"
  echo "test network up: $RUNNER_TEST_HOST here, $RUNNER_TEST_NODE_HOST in namespace $NS"
}

down() {
  local pids; pids="$(ip netns pids "$NS" 2>/dev/null || true)"
  if [ -n "$pids" ]; then kill -9 $pids 2>/dev/null || true; fi  # word splitting on purpose: one pid per word
  ip netns delete "$NS" 2>/dev/null || true  # deleting the namespace deletes both ends of the pair
  ip link delete "$LINK" 2>/dev/null || true
}

"${1:-up}"
