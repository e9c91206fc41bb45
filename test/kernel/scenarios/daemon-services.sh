#!/bin/bash
# The real daemon (embedded mode) programs the kernel from Service manifests, and the kernel offloads exactly
# the connections the decisions say, after the thresholds they say. One VM boot, one daemon, two phases.
#
# Topology: lib.sh's standard client -- router -- server; the server pod runs one iperf3 server per Service
# (an iperf3 server runs one test at a time) and a TCP echo server. The kube-proxy stand-in DNATs each
# ClusterIP:port to its endpoint port; the observer table counts, per Service port, the packets that still
# take the slow path (forward hook, after Slipstream's chain).
#
#   key     Service (namespace/name)        ClusterIP(s)               port      endpoint   expected
#   db      shop/db                         10.96.1.10                 5432/TCP  iperf3     offload (policy sql-databases, 20)
#   short   shop/db                         10.96.1.10                 3306/TCP  echo       in the map, but a short connection stays below 20
#   dns     platform/dns                    10.96.1.53                 53/TCP    iperf3     never (policy dns), even a long flow
#   optout  legacy/pg (namespace opted out) 10.96.1.20                 5432/TCP  iperf3     never (namespace label)
#   t20     shop/t20 (packet-threshold 20)  10.96.1.31                 5432/TCP  iperf3     offload after 20 packets
#   t2000   shop/t2000 (threshold 2000)     10.96.1.32                 5432/TCP  iperf3     offload after 2000 packets
#   udp     media/stream                    10.96.1.40                 5201/UDP  iperf3 -u  offload (policy iperf3, 20)
#   v6      shop/dual (dual-stack)          10.96.1.50, fd00:96::1:50  5432/TCP  iperf3     offload, over IPv6
#   toggle  shop/toggle                     10.96.1.60                 5432/TCP  iperf3     offload; then acceleration: disabled
#
# Phase 1: every flow at once (rate-limited, so the emulated CPUs stay responsive); conntrack and counters
# are snapshotted while they run, then the flows are stopped.
# Phase 2: shop/toggle's manifest is rewritten with slipstream.dev/acceleration: disabled while the daemon
# runs; once its element is gone, a new long flow to it is not offloaded.
#
# Evidence in $LAB (asserted by test/kernel/daemon-offload.test.ts):
#   env.json                      kernel release
#   daemon.log                    the daemon's JSON log lines
#   ruleset-start.json            nft -j list ruleset once the daemon has hooked the pod veths
#   ct-phase1.txt                 conntrack (both families), taken while the phase-1 flows ran
#   nft-phase1.json               nft -j list ruleset right after (observer and threshold-chain counters)
#   phase1.json                   poll time, whether every condition was met, which flows were still running
#   short.out                     what the echo server sent back on the short connection
#   toggle.json                   whether the element was there before the change, ms until it was gone
#   slipstream-after-toggle.json  nft -j list table inet slipstream once it was gone
#   ct-phase2.txt, nft-phase2.json, phase2.json   the same as phase 1, for the new flow to shop/toggle
set -eu
. "$(dirname "$0")/lib.sh"

SVC_DIR=/tmp/services
mkdir -p "$SVC_DIR"
echo "{\"kernel\": \"$(uname -r)\"}" >"$LAB/env.json"

# The manifests first, then the daemon: its start (loading its modules takes tens of seconds under
# emulation) overlaps with building the topology; it hooks the pod veths as they come up.
{
  namespace_yaml shop
  echo ---
  namespace_yaml platform
  echo ---
  namespace_yaml media
  echo ---
  namespace_yaml legacy slipstream.dev/acceleration=disabled
} | put_manifest "$SVC_DIR" namespaces.yaml
service_yaml shop db 10.96.1.10 5432/TCP,3306/TCP | put_manifest "$SVC_DIR" db.yaml
service_yaml platform dns 10.96.1.53 53/TCP,53/UDP | put_manifest "$SVC_DIR" dns.yaml
service_yaml legacy pg 10.96.1.20 5432/TCP | put_manifest "$SVC_DIR" optout.yaml
service_yaml shop t20 10.96.1.31 5432/TCP slipstream.dev/packet-threshold=20 | put_manifest "$SVC_DIR" t20.yaml
service_yaml shop t2000 10.96.1.32 5432/TCP slipstream.dev/packet-threshold=2000 | put_manifest "$SVC_DIR" t2000.yaml
service_yaml media stream 10.96.1.40 5201/UDP,5201/TCP | put_manifest "$SVC_DIR" udp.yaml
service_yaml shop dual 10.96.1.50,fd00:96::1:50 5432/TCP | put_manifest "$SVC_DIR" dual.yaml
service_yaml shop toggle 10.96.1.60 5432/TCP | put_manifest "$SVC_DIR" toggle.yaml

log "starting the daemon; building the topology"
# Kernel modules first: the daemon died a few times (SIGSEGV/SIGTRAP, see daemon_wait_started) when it
# started while modprobe was loading them.
router_init
daemon_start "$SVC_DIR" "$LAB/daemon.log"
standard_topology
kube_proxy_standin_init
observer_init

# route KEY CLUSTER_IP PROTO PORT ENDPOINT_PORT: stand-in DNAT to the server pod plus an observer counter.
route() {
  local ep=$SERVER_IP4
  case $2 in *:*) ep=$SERVER_IP6 ;; esac
  kube_proxy_standin_element "$2" "$3" "$4" "$ep" "$5"
  observer_rule "$1" "$2" "$3" "$4"
}
{
  route db 10.96.1.10 tcp 5432 5401
  route short 10.96.1.10 tcp 3306 7000
  route dns 10.96.1.53 tcp 53 5402
  route optout 10.96.1.20 tcp 5432 5403
  route t20 10.96.1.31 tcp 5432 5404
  route t2000 10.96.1.32 tcp 5432 5405
  route udp 10.96.1.40 udp 5201 5406
  route udp-control 10.96.1.40 tcp 5201 5406
  route v6 fd00:96::1:50 tcp 5432 5407
  route v4-dual 10.96.1.50 tcp 5432 5407
  route toggle 10.96.1.60 tcp 5432 5408
} | nft -f -

# 5409: the endpoint shop/toggle moves to in phase 2 (a fresh server, whatever state 5408 is left in).
iperf_servers "$SERVER_NS" 5401 5402 5403 5404 5405 5406 5407 5408 5409
ip netns exec "$SERVER_NS" busybox nc -ll -p 7000 -e /bin/cat &
wait_listen "$SERVER_NS" 7000 60
log "topology up; waiting for the daemon"
daemon_wait_started "$LAB/daemon.log" 240
has_pod_devices() { [ "$(flowtable_devices | grep -cxE "$CLIENT_IF|$SERVER_IF")" = 2 ]; }
wait_until 60 has_pod_devices >/dev/null || die "the flowtable does not hook $CLIENT_IF and $SERVER_IF"
log "daemon synced"
nft -j list ruleset >"$LAB/ruleset-start.json"

# ---------------------------------------------------------------------------------------------------------
log "phase 1: every flow at once"
t0=$(uptime_ms)
# The short connection: one request and its echo, then idle (open) until the snapshot is taken.
(
  echo ping
  sleep 600
) | ip netns exec "$CLIENT_NS" busybox nc 10.96.1.10 3306 >"$LAB/short.out" &
SHORT_PID=$!
flow_start db 10.96.1.10 5432
flow_start dns 10.96.1.53 53
flow_start optout 10.96.1.20 5432
flow_start t20 10.96.1.31 5432
flow_start t2000 10.96.1.32 5432
flow_start udp 10.96.1.40 5201 -u -b 20M -l 1400
flow_start v6 fd00:96::1:50 5432
flow_start toggle 10.96.1.60 5432

# Snapshot as soon as every flow that should be offloaded is, and the long flows that must not be have
# carried more packets than any threshold here (3000); at most 120 s.
while :; do
  sleep 0.5
  conntrack_snapshot "$LAB/ct-phase1.txt"
  elapsed=$(($(uptime_ms) - t0))
  ok=true
  for spec in "tcp 10.96.1.10 5432" "tcp 10.96.1.31 5432" "tcp 10.96.1.32 5432" "udp 10.96.1.40 5201" \
    "tcp fd00:96::1:50 5432" "tcp 10.96.1.60 5432"; do
    # shellcheck disable=SC2086
    ct_offloaded $spec "$LAB/ct-phase1.txt" || ok=false
  done
  [ "$(ct_packets tcp 10.96.1.53 53 "$LAB/ct-phase1.txt")" -gt 3000 ] || ok=false
  [ "$(ct_packets tcp 10.96.1.20 5432 "$LAB/ct-phase1.txt")" -gt 3000 ] || ok=false
  [ "$ok" = true ] && break
  [ "$elapsed" -lt 120000 ] || break
done
# Freeze the clients (SIGSTOP: no FIN, the connections stay established and offloaded) so that conntrack
# and the counters are read from one consistent state, then stop them for good.
flows_pause
conntrack_snapshot "$LAB/ct-phase1.txt"
nft -j list ruleset >"$LAB/nft-phase1.json"
echo "{\"elapsedMs\": $elapsed, \"conditionsMet\": $ok, \"running\": $(flows_running_json)}" >"$LAB/phase1.json"
log "phase 1 snapshot after ${elapsed} ms (conditions met: $ok); stopping the flows"
flows_stop
kill "$SHORT_PID" 2>/dev/null || true

# ---------------------------------------------------------------------------------------------------------
log "phase 2: shop/toggle gets slipstream.dev/acceleration: disabled"
slipstream_has_element 10.96.1.60 tcp 5432 && before=true || before=false
service_yaml shop toggle 10.96.1.60 5432/TCP slipstream.dev/acceleration=disabled | put_manifest "$SVC_DIR" toggle.yaml
gone_ms=$(wait_until 60 eval '! slipstream_has_element 10.96.1.60 tcp 5432') || gone_ms=-1
echo "{\"elementBefore\": $before, \"goneAfterMs\": $gone_ms}" >"$LAB/toggle.json"
nft -j list table inet slipstream >"$LAB/slipstream-after-toggle.json"
log "element gone after ${gone_ms} ms; a new flow to shop/toggle"
nft -f - <<NFT
delete element inet $KUBE_PROXY_STANDIN_TABLE service-ips-v4 { 10.96.1.60 . tcp . 5432 }
add element inet $KUBE_PROXY_STANDIN_TABLE service-ips-v4 { 10.96.1.60 . tcp . 5432 : $SERVER_IP4 . 5409 }
NFT
t0=$(uptime_ms)
flow_start toggle2 10.96.1.60 5432
while :; do
  sleep 0.5
  conntrack_snapshot "$LAB/ct-phase2.txt"
  elapsed=$(($(uptime_ms) - t0))
  ok=true
  [ "$(ct_packets tcp 10.96.1.60 5432 "$LAB/ct-phase2.txt")" -gt 3000 ] || ok=false
  [ "$ok" = true ] && break
  [ "$elapsed" -lt 60000 ] || break
done
flows_pause
conntrack_snapshot "$LAB/ct-phase2.txt"
nft -j list ruleset >"$LAB/nft-phase2.json"
echo "{\"elapsedMs\": $elapsed, \"conditionsMet\": $ok, \"running\": $(flows_running_json)}" >"$LAB/phase2.json"
flows_stop
log done
