#!/usr/bin/env bash
# `npm run demo`: the real daemon offloads a real flow, with numbers. test/kernel/scenarios/demo.sh does the
# work in a network namespace that plays a Kubernetes node: here, in private namespaces, where this kernel has
# flowtables; else in the kernel VM lab (test/kernel/demo.ts). Everything the demo creates (namespaces,
# processes, files) goes away when it ends, also when it is interrupted.
# SLIPSTREAM_DEMO_HOST=1 runs it here whatever the kernel (its cleanup test does).
set -euo pipefail
cd "$(dirname "$0")/.."
node=node_modules/.bin/node
if [ "$(id -u)" != 0 ]; then
  echo "npm run demo needs root (network namespaces, nftables)" >&2
  exit 1
fi
prefix="slipstream-demo-$$-"

# Whether this kernel has flowtables and `flow add`: a check-mode transaction (the kernel answers, nothing is
# committed) in a scratch namespace.
flowtables_here() {
  local ns="${prefix}probe" rc=0
  ip netns add "$ns" || return 1
  ip netns exec "$ns" nft -c -f - >/dev/null 2>&1 <<'NFT' || rc=1
table inet slipstream-probe {
  flowtable ft { hook ingress priority 0; }
  chain c { ct packets > 1 flow add @ft; }
}
NFT
  ip netns del "$ns"
  return "$rc"
}

if [ "${SLIPSTREAM_DEMO_HOST:-}" = 1 ]; then
  echo "Slipstream demo: on this machine (Linux $(uname -r)) as SLIPSTREAM_DEMO_HOST=1 asks, whatever its kernel offers."
elif flowtables_here; then
  echo "Slipstream demo: this kernel ($(uname -r)) has flowtables; the demo's node is a few network namespaces on this machine."
else
  exec "$node" test/kernel/demo.ts
fi

node_ns="${prefix}node"
work=$(mktemp -d /tmp/slipstream-demo.XXXXXX)
cleanup() {
  for ns in "$node_ns" "${prefix}client" "${prefix}server"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: removing the demo namespaces" >&2; exit 130' INT TERM
ip netns add "$node_ns"
# nsenter, not `ip netns exec`: that one also unshares the mount namespace, and the pod namespaces the scenario
# adds would then be mounted in there only. In the background so that a signal reaches the trap at once (the
# scenario itself is killed by cleanup, with everything else in the namespaces).
nsenter --net="/run/netns/$node_ns" env LAB="$work" DEMO_WORK="$work" DEMO_NS_PREFIX="$prefix" \
  DEMO_WHERE="this machine (Linux $(uname -r))" bash test/kernel/scenarios/demo.sh &
wait $!
