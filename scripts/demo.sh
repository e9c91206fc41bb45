#!/usr/bin/env bash
# The main job on the embedded default: the daemon reads the example Service manifests in
# deploy/examples, programs a private network namespace (so the host's own rules are never
# touched), and `slipstream status` explains every decision against that kernel.
set -euo pipefail
cd "$(dirname "$0")/.."
node=node_modules/.bin/node
ns="slipstream-demo-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
# A node-like namespace: loopback plus two pod-facing veth links for the flowtable to follow.
ip -n "$ns" link set lo up
ip -n "$ns" link add pod-a type veth peer name pod-b
ip -n "$ns" link set pod-a up && ip -n "$ns" link set pod-b up

echo "== daemon --once: the ruleset it programmed into network namespace $ns"
OTEL_TRACES_EXPORTER="${OTEL_TRACES_EXPORTER:-none}" "$node" daemon/src/main.ts --services deploy/examples --netns "$ns" --once
echo
echo "== the kernel's own listing (nft list table inet slipstream)"
ip netns exec "$ns" nft list table inet slipstream
echo
echo "== slipstream status"
"$node" daemon/src/status-main.ts --services deploy/examples --netns "$ns"
