#!/bin/bash
# Every way traffic reaches a Service, on a real kernel: one LoadBalancer Service reached at its
# ClusterIP, its externalIP, its load balancer IP and its nodePort on this node's address, each
# DNAT'd by the kube-proxy stand-in like kube-proxy does, and two ports of one Service offloaded at
# their own thresholds (5432 after 20 packets, an http port after 100). The observer's forward-hook
# counters count each connection's slow-path packets.
set -eu
. "$(dirname "$0")/lib.sh"

SVC_DIR=/tmp/services
mkdir -p "$SVC_DIR"
echo "{\"kernel\": \"$(uname -r)\"}" >"$LAB/env.json"

NODE_IP=$(router_ip4 1) # the node's address on the client's side: where nodePort traffic is sent
namespace_yaml shop | put_manifest "$SVC_DIR" namespaces.yaml
cat <<YAML | put_manifest "$SVC_DIR" edge.yaml
apiVersion: v1
kind: Service
metadata:
  name: edge
  namespace: shop
spec:
  type: LoadBalancer
  clusterIP: 10.96.5.10
  clusterIPs: ["10.96.5.10"]
  externalIPs: ["198.51.100.10"]
  ports:
    - { name: postgres, port: 5432, protocol: TCP, nodePort: 30432 }
    - { name: http, port: 8080, protocol: TCP, nodePort: 30080 }
status:
  loadBalancer:
    ingress:
      - ip: 203.0.113.10
YAML

log "starting the daemon; building the topology"
router_init
daemon_start "$SVC_DIR" "$LAB/daemon.log"
standard_topology
kube_proxy_standin_init
observer_init
route() { # NAME VIP PORT ENDPOINT_PORT
  kube_proxy_standin_element "$2" tcp "$3" "$SERVER_IP4" "$4"
  observer_rule "$1" "$2" tcp "$3"
}
{
  route cluster 10.96.5.10 5432 5401
  route external 198.51.100.10 5432 5402
  route lb 203.0.113.10 5432 5403
  route nodeport "$NODE_IP" 30432 5404
  route http 10.96.5.10 8080 5405
} | nft -f -
iperf_servers "$SERVER_NS" 5401 5402 5403 5404 5405
log "topology up; waiting for the daemon"
daemon_wait_started "$LAB/daemon.log" 240
has_pod_devices() { [ "$(flowtable_devices | grep -cxE "$CLIENT_IF|$SERVER_IF")" = 2 ]; }
wait_until 60 has_pod_devices >/dev/null || die "the flowtable does not hook $CLIENT_IF and $SERVER_IF"
node_address() { nft list set inet slipstream node4 2>/dev/null | tr -d '\n\t' | grep -q "$NODE_IP"; }
wait_until 60 node_address >/dev/null || die "node4 does not hold $NODE_IP"
wait_until 60 slipstream_has_element 203.0.113.10 tcp 5432 >/dev/null || die "no element for the load balancer IP"
nft -j list ruleset >"$LAB/ruleset-start.json"
log "daemon synced"

t0=$(uptime_ms)
flow_start cluster 10.96.5.10 5432
flow_start external 198.51.100.10 5432
flow_start lb 203.0.113.10 5432
flow_start nodeport "$NODE_IP" 30432
flow_start http 10.96.5.10 8080
while :; do
  sleep 0.5
  conntrack_snapshot "$LAB/ct.txt"
  elapsed=$(($(uptime_ms) - t0))
  ok=true
  for spec in "tcp 10.96.5.10 5432" "tcp 198.51.100.10 5432" "tcp 203.0.113.10 5432" "tcp $NODE_IP 30432" \
    "tcp 10.96.5.10 8080"; do
    ct_offloaded $spec "$LAB/ct.txt" || ok=false
  done
  [ "$ok" = true ] && break
  [ "$elapsed" -lt 120000 ] || break
done
flows_pause
conntrack_snapshot "$LAB/ct.txt"
nft -j list ruleset >"$LAB/nft.json"
echo "{\"elapsedMs\": $elapsed, \"conditionsMet\": $ok, \"nodeIp\": \"$NODE_IP\", \"running\": $(flows_running_json)}" >"$LAB/flows.json"
log "snapshot after ${elapsed} ms (conditions met: $ok)"
flows_stop
log done
