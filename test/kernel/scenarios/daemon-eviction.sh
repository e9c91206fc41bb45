#!/bin/bash
# The real daemon (embedded mode): conntrack's counters of offloaded connections, and offload that ends for
# established connections when it is turned off. One VM boot.
#
# Services (the kube-proxy stand-in DNATs each to its own iperf3 server on the server pod):
#   keep    shop/keep     10.96.5.10:5432 -> server:5401  offloaded throughout (the "other Service")
#   toggle  shop/toggle   10.96.5.20:5432 -> server:5402  then slipstream.dev/acceleration: disabled
#   b1, b2  bulk/s1, s2   10.96.8.2/.3:5432 -> 5403/5404  two of the 1,000 Services of namespace bulk, which
#                                                          is then labelled slipstream.dev/acceleration=disabled
# Each has one light long flow (iperf3 -b 4M), started before anything changes; the observer table counts
# each one's slow-path packets (forward hook, after Slipstream's chain).
#
# Evidence in $LAB (asserted by test/kernel/daemon-eviction.test.ts):
#   daemon.log                       the daemon's JSON log lines
#   ct-start.txt                     conntrack once every flow is offloaded
#   1. counters: ct-counters-1.txt, ct-counters-2.txt (3 s apart, flows running), counters.json
#      {"slowPathKeep"} between them, status.json (GET /status right after)
#   2. acceleration: disabled on shop/toggle
#      ct-before-disable.txt, ct-after-disable.txt, disable.json {"writtenAt" (UTC), "evictedAfterMs" (manifest written ->
#      conntrack shows toggle without [OFFLOAD]; -1: never), "slowPathKeep", "slowPathToggle" (2 s after),
#      "logLineBefore", "logLineAfter"}
#   3. namespace bulk opted out
#      ct-after-optout.txt, optout.json {"writtenAt", "evictedAfterMs", "slowPathKeep", "slowPathB1", "slowPathB2",
#      "elementsLeft" (svc4), "logLineBefore", "logLineAfter"}
#   running.json                     which iperf3 clients are still running at the end (none was reset)
#   env.json                         kernel
set -eu
. "$(dirname "$0")/lib.sh"

SVC_DIR=/tmp/services
HEALTH=127.0.0.1:9469
mkdir -p "$SVC_DIR"
echo "{\"kernel\": \"$(uname -r)\"}" >"$LAB/env.json"

namespaces() { # [LABEL...] for bulk
  namespace_yaml shop
  echo ---
  namespace_yaml bulk "$@"
}
namespaces | put_manifest "$SVC_DIR" namespaces.yaml
service_yaml shop keep 10.96.5.10 5432/TCP | put_manifest "$SVC_DIR" keep.yaml
service_yaml shop toggle 10.96.5.20 5432/TCP | put_manifest "$SVC_DIR" toggle.yaml
for i in $(seq 0 999); do
  [ "$i" -eq 0 ] || echo ---
  service_yaml bulk "s$i" "10.96.$((8 + i / 250)).$((i % 250 + 1))" 5432/TCP
done | put_manifest "$SVC_DIR" bulk.yaml

log "starting the daemon; building the topology"
router_init
daemon_start "$SVC_DIR" "$LAB/daemon.log" --health-listen "$HEALTH"
standard_topology
kube_proxy_standin_init
observer_init
{
  kube_proxy_standin_element 10.96.5.10 tcp 5432 "$SERVER_IP4" 5401
  kube_proxy_standin_element 10.96.5.20 tcp 5432 "$SERVER_IP4" 5402
  kube_proxy_standin_element 10.96.8.2 tcp 5432 "$SERVER_IP4" 5403
  kube_proxy_standin_element 10.96.8.3 tcp 5432 "$SERVER_IP4" 5404
  observer_rule keep 10.96.5.10 tcp 5432
  observer_rule toggle 10.96.5.20 tcp 5432
  observer_rule b1 10.96.8.2 tcp 5432
  observer_rule b2 10.96.8.3 tcp 5432
} | nft -f -
iperf_servers "$SERVER_NS" 5401 5402 5403 5404
log "topology up; waiting for the daemon"
daemon_wait_started "$LAB/daemon.log" 240
has_pod_devices() { [ "$(flowtable_devices | grep -cxE "$CLIENT_IF|$SERVER_IF")" = 2 ]; }
wait_until 60 has_pod_devices >/dev/null || die "the flowtable does not hook $CLIENT_IF and $SERVER_IF"
wait_until 60 slipstream_has_element 10.96.8.3 tcp 5432 >/dev/null || die "no element for bulk/s2"
log "daemon synced"

observer() { # NAME: the slow-path packets the observer counted for NAME
  nft list chain inet "$OBSERVER_TABLE" forward | sed -n "s/.*counter packets \([0-9]*\) bytes [0-9]* comment \"$1\".*/\1/p"
}
loglines() { wc -l <"$LAB/daemon.log"; }
offloaded() { ct_offloaded tcp "$1" 5432; }
not_offloaded() { # CLUSTER_IP...: none of them has an [OFFLOAD] connection now
  local vip
  for vip in "$@"; do ! offloaded "$vip" || return 1; done
}

LIGHT="-b 4M -l 8K"
# shellcheck disable=SC2086
{
  flow_start keep 10.96.5.10 5432 $LIGHT
  flow_start toggle 10.96.5.20 5432 $LIGHT
  flow_start b1 10.96.8.2 5432 $LIGHT
  flow_start b2 10.96.8.3 5432 $LIGHT
}
all_offloaded() {
  conntrack_snapshot "$LAB/ct-start.txt"
  local vip
  for vip in 10.96.5.10 10.96.5.20 10.96.8.2 10.96.8.3; do ct_offloaded tcp "$vip" 5432 "$LAB/ct-start.txt" || return 1; done
}
wait_until 90 all_offloaded >/dev/null || die "not every flow is offloaded"
log "every flow offloaded"
sleep 1

# --- 1. counters keep counting after offload ------------------------------------------------------------
b=$(observer keep)
conntrack_snapshot "$LAB/ct-counters-1.txt"
sleep 3
conntrack_snapshot "$LAB/ct-counters-2.txt"
echo "{\"slowPathKeep\": $(($(observer keep) - b))}" >"$LAB/counters.json"
curl -s --max-time 30 "http://$HEALTH/status" >"$LAB/status.json"
log "counters read"

# --- 2. acceleration: disabled on shop/toggle -----------------------------------------------------------
line_before=$(loglines)
bk=$(observer keep)
conntrack_snapshot "$LAB/ct-before-disable.txt"
t0=$(uptime_ms)
written=$(date -u +%FT%T.%3NZ)
service_yaml shop toggle 10.96.5.20 5432/TCP slipstream.dev/acceleration=disabled | put_manifest "$SVC_DIR" toggle.yaml
if wait_until 60 not_offloaded 10.96.5.20 >/dev/null; then evicted=$(($(uptime_ms) - t0)); else evicted=-1; fi
bt=$(observer toggle)
sleep 2
conntrack_snapshot "$LAB/ct-after-disable.txt"
cat >"$LAB/disable.json" <<EOF
{"writtenAt": "$written", "evictedAfterMs": $evicted, "slowPathKeep": $(($(observer keep) - bk)), "slowPathToggle": $(($(observer toggle) - bt)),
 "logLineBefore": $line_before, "logLineAfter": $(loglines)}
EOF
log "toggle: offload ended ${evicted} ms after its manifest said disabled"

# --- 3. the namespace of 1,000 Services opted out -------------------------------------------------------
line_before=$(loglines)
bk=$(observer keep)
t0=$(uptime_ms)
written=$(date -u +%FT%T.%3NZ)
namespaces slipstream.dev/acceleration=disabled | put_manifest "$SVC_DIR" namespaces.yaml
if wait_until 60 not_offloaded 10.96.8.2 10.96.8.3 >/dev/null; then evicted=$(($(uptime_ms) - t0)); else evicted=-1; fi
b1=$(observer b1)
b2=$(observer b2)
sleep 2
conntrack_snapshot "$LAB/ct-after-optout.txt"
left=$(nft -j list map inet slipstream svc4 | grep -o '"concat"' | wc -l)
cat >"$LAB/optout.json" <<EOF
{"writtenAt": "$written", "evictedAfterMs": $evicted, "slowPathKeep": $(($(observer keep) - bk)), "slowPathB1": $(($(observer b1) - b1)),
 "slowPathB2": $(($(observer b2) - b2)), "elementsLeft": $left, "logLineBefore": $line_before, "logLineAfter": $(loglines)}
EOF
log "bulk: offload ended ${evicted} ms after the namespace was opted out; $left elements left"

echo "$(flows_running_json)" >"$LAB/running.json"
flows_stop
log done
