#!/bin/bash
# The real daemon (embedded mode) while the node changes under offloaded traffic: pod veths appear and
# disappear, and the daemon itself is restarted and killed. One VM boot.
#
# Pods: client (1, router side vc), server (2, vs) and server-x (4, vx) from the start; server-n (3, vn)
# appears while traffic flows. Services (the kube-proxy stand-in DNATs each to its pod's iperf3 server):
#   A  shop/a  10.96.2.10:5432 -> server    offloaded before, during and after everything below
#   X  shop/x  10.96.2.30:5432 -> server-x  offloaded, then its pod veth is deleted
#   N  shop/n  10.96.2.20:5432 -> server-n  the new pod: its Service and DNAT appear with it
#
# Steps and evidence in $LAB (asserted by test/kernel/daemon-offload.test.ts):
#   daemon-1.log, daemon-2.log      the JSON log lines of the first and the restarted daemon
#   ct-start.txt                    conntrack once A and X are offloaded
#   1. device added: pod server-n (veth vn) is created while A and X flow; the daemon hooks vn
#      device-added.json            {"hookedAfterMs" (after add_pod returned), "devicesBefore", "devicesAfter"}
#      links.txt                    TZ=UTC ip -ts monitor link over the pod's creation (when vn came up)
#      ct-added.txt                 conntrack once N's flow is offloaded too
#   2. device deleted: vx is deleted while A, X and N are offloaded
#      device-deleted.json          {"unhookedAfterMs", "devices", "syncSeenAfterMs", "logLineBefore"}
#      observer-before-delete.json, observer-after-delete.json   slow-path counters around it
#      ct-deleted.txt               conntrack after the daemon has handled the deletion
#   3. restart: SIGTERM, start again, while `nft monitor` records every ruleset change
#      table-before.txt, table-after-restart.txt, table-after-kill.txt   nft -a list table inet slipstream
#                                   (handles included, counter values blanked)
#      ct-restarted.txt             conntrack after the restarted daemon's start-up sync
#      observer-before-restart.json, observer-restarted.json   slow-path counters around the restart
#   4. SIGKILL of the restarted daemon: the table stays
#      ct-killed.txt, observer-killed.json   conntrack and slow-path counters after the kill
#      monitor.txt                  nft monitor output over steps 3 and 4, then a canary table added and
#                                   deleted on purpose (proves the monitor was listening)
#   env.json, summary.json          kernel; pids and exit statuses
set -eu
. "$(dirname "$0")/lib.sh"

SVC_DIR=/tmp/services
HEALTH=127.0.0.1:9469
mkdir -p "$SVC_DIR"
echo "{\"kernel\": \"$(uname -r)\"}" >"$LAB/env.json"

namespace_yaml shop | put_manifest "$SVC_DIR" namespaces.yaml
service_yaml shop a 10.96.2.10 5432/TCP | put_manifest "$SVC_DIR" a.yaml
service_yaml shop x 10.96.2.30 5432/TCP | put_manifest "$SVC_DIR" x.yaml

log "starting the daemon; building the topology"
# Kernel modules first: the daemon died a few times (SIGSEGV/SIGTRAP, see daemon_wait_started) when it
# started while modprobe was loading them.
router_init
daemon_start "$SVC_DIR" "$LAB/daemon-1.log" --health-listen "$HEALTH"
standard_topology
add_pod server-x 4 vx
kube_proxy_standin_init
observer_init
{
  kube_proxy_standin_element 10.96.2.10 tcp 5432 "$SERVER_IP4" 5401
  kube_proxy_standin_element 10.96.2.30 tcp 5432 "$(pod_ip4 4)" 5401
  observer_rule A 10.96.2.10 tcp 5432
  observer_rule X 10.96.2.30 tcp 5432
  observer_rule N 10.96.2.20 tcp 5432
} | nft -f -
iperf_servers "$SERVER_NS" 5401
iperf_servers server-x 5401
log "topology up; waiting for the daemon"
daemon_wait_started "$LAB/daemon-1.log" 240
DAEMON1=$DAEMON_PID
has_devices() { # DEV...: the flowtable hooks all of them
  local devs d
  devs=$(flowtable_devices)
  for d in "$@"; do echo "$devs" | grep -qx "$d" || return 1; done
}
wait_until 60 has_devices vc vs vx >/dev/null || die "the flowtable does not hook vc, vs and vx"
log "daemon synced"

# wait_offloaded SECONDS FILE SPEC...: waits until every SPEC ("PROTO CLUSTER_IP PORT") is [OFFLOAD] in a fresh
# conntrack snapshot FILE.
wait_offloaded() {
  local secs=$1 f=$2 spec t0
  shift 2
  t0=$(uptime_ms)
  while :; do
    conntrack_snapshot "$f"
    local all=true
    # shellcheck disable=SC2086
    for spec in "$@"; do ct_offloaded $spec "$f" || all=false; done
    [ "$all" = true ] && return 0
    [ $(($(uptime_ms) - t0)) -lt $((secs * 1000)) ] || return 1
    sleep 0.5
  done
}
# last_success: the daemon's lastSuccessAt from its health endpoint.
last_success() {
  curl -s --max-time 10 "http://$HEALTH/healthz" | sed -n 's/.*"lastSuccessAt":"\([^"]*\)".*/\1/p'
}

# Light flows (4 Mbit/s: ~100 packets/s, well past the threshold in a second) keep the emulated CPUs free for
# the daemon's restarts; offload does not depend on the rate.
LIGHT="-b 4M -l 8K"
# shellcheck disable=SC2086
flow_start A 10.96.2.10 5432 $LIGHT
# shellcheck disable=SC2086
flow_start X 10.96.2.30 5432 $LIGHT
wait_offloaded 90 "$LAB/ct-start.txt" "tcp 10.96.2.10 5432" "tcp 10.96.2.30 5432" || die "A and X are not offloaded"
log "A and X offloaded"

# --- 1. a new pod veth while traffic flows --------------------------------------------------------------
# ip -ts monitor link stamps the moment vn comes up (UTC wall clock, like the daemon's log).
TZ=UTC ip -ts monitor link >"$LAB/links.txt" 2>&1 &
LINKMON=$!
sleep 0.5
before=$(flowtable_devices | tr '\n' ' ')
add_pod server-n 3 vn
# From the end of add_pod (vn has been up since its middle) until the flowtable lists vn.
hooked=$(wait_until 60 has_devices vn) || hooked=-1
after=$(flowtable_devices | tr '\n' ' ')
kill "$LINKMON" 2>/dev/null || true
echo "{\"hookedAfterMs\": $hooked, \"devicesBefore\": \"$before\", \"devicesAfter\": \"$after\"}" >"$LAB/device-added.json"
log "vn hooked ${hooked} ms after add_pod returned"
iperf_servers server-n 5401
kube_proxy_standin_add_service 10.96.2.20 tcp 5432 "$(pod_ip4 3)" 5401
service_yaml shop n 10.96.2.20 5432/TCP | put_manifest "$SVC_DIR" n.yaml
wait_until 60 slipstream_has_element 10.96.2.20 tcp 5432 >/dev/null || die "no element for shop/n"
# shellcheck disable=SC2086
flow_start N 10.96.2.20 5432 $LIGHT
wait_offloaded 90 "$LAB/ct-added.txt" "tcp 10.96.2.10 5432" "tcp 10.96.2.30 5432" "tcp 10.96.2.20 5432" ||
  log "not every flow is offloaded after the new pod (see ct-added.txt)"
log "A, X and N offloaded"

# --- 2. a pod veth deleted while the others carry offloaded flows ---------------------------------------
line_before=$(wc -l <"$LAB/daemon-1.log")
success_before=$(last_success)
nft -j list table inet "$OBSERVER_TABLE" >"$LAB/observer-before-delete.json"
t0=$(uptime_ms)
ip link del vx
gone() { ! has_devices vx; }
unhooked=$(wait_until 60 gone) || unhooked=-1
# The daemon has handled the deletion once it has finished a sync after it (a sync that writes nothing is
# not logged, but it moves lastSuccessAt).
synced() { [ "$(last_success)" != "$success_before" ]; }
seen=$(wait_until 60 synced) || seen=-1
seen=$((seen < 0 ? -1 : $(($(uptime_ms) - t0))))
sleep 1
conntrack_snapshot "$LAB/ct-deleted.txt"
nft -j list table inet "$OBSERVER_TABLE" >"$LAB/observer-after-delete.json"
echo "{\"unhookedAfterMs\": $unhooked, \"syncSeenAfterMs\": $seen, \"devices\": \"$(flowtable_devices | tr '\n' ' ')\", \"logLineBefore\": $line_before}" >"$LAB/device-deleted.json"
log "vx deleted; unhooked after ${unhooked} ms, daemon synced after ${seen} ms"
kill -KILL "${FLOW_PID[X]}" 2>/dev/null || true

# --- 3. restart while flows are offloaded ---------------------------------------------------------------
table_listing() { nft -a list table inet slipstream | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'; }
nft monitor >"$LAB/monitor.txt" 2>&1 &
MONITOR=$!
sleep 1
table_listing >"$LAB/table-before.txt"
nft -j list table inet "$OBSERVER_TABLE" >"$LAB/observer-before-restart.json"
log "restart: SIGTERM"
kill -TERM "$DAEMON1"
wait "$DAEMON1" && rc1=0 || rc1=$?
daemon_start "$SVC_DIR" "$LAB/daemon-2.log" --health-listen "$HEALTH"
daemon_wait_started "$LAB/daemon-2.log" 240
DAEMON2=$DAEMON_PID
sleep 1
table_listing >"$LAB/table-after-restart.txt"
conntrack_snapshot "$LAB/ct-restarted.txt"
nft -j list table inet "$OBSERVER_TABLE" >"$LAB/observer-restarted.json"
log "restarted"

# --- 4. SIGKILL -----------------------------------------------------------------------------------------
kill -KILL "$DAEMON2"
wait "$DAEMON2" && rc2=0 || rc2=$?
sleep 1
table_listing >"$LAB/table-after-kill.txt"
conntrack_snapshot "$LAB/ct-killed.txt"
nft -j list table inet "$OBSERVER_TABLE" >"$LAB/observer-killed.json"
log "killed"

# The canary: a change made on purpose must show up in the monitor's output.
nft add table inet zz-canary
wait_until 30 grep -q zz-canary "$LAB/monitor.txt" >/dev/null || log "the canary did not show in nft monitor"
nft delete table inet zz-canary
sleep 0.5
kill "$MONITOR" 2>/dev/null || true
echo "{\"daemon1ExitStatus\": $rc1, \"daemon2ExitStatus\": $rc2}" >"$LAB/summary.json"
flows_stop
log done
