#!/bin/bash
# The real daemon (embedded mode) while the node's links change under an offloaded flow. One VM boot.
#
# Pods: client (1, router side vc), server (2, vs), server-x (4, vx: an unrelated pod), server-b (5, vb: a pod
# whose veth is re-created), plus a veth pair skip0/skip1 that the daemon is told to leave out
# (--flowtable-exclude 'skip*'). Services (the kube-proxy stand-in DNATs each to its pod's iperf3 server):
#   A  shop/a  10.96.4.10:5432 -> server    a light long flow, offloaded through vc and vs
#   B  shop/b  10.96.4.20:5432 -> server-b  a new connection after vb is re-created
# The daemon runs `ip` through a wrapper ($WRAP) that is the real ip, except once: after /tmp/vanish-once
# appears, the first link listing that shows vz UP freezes the daemon and its link monitor (SIGSTOP), deletes
# vz and lets the daemon go on (SIGCONT) with that listing: a link that vanishes between the daemon's listing
# and its commit. Until that commit is refused, a listing the daemon makes again (events that arrived during
# the first make it list once more) is handed the same stale listing. The monitor is let go once the daemon
# has logged the refused transaction.
#
# Steps and evidence in $LAB (asserted by test/kernel/daemon-devices.test.ts):
#   daemon.log                      the daemon's JSON log lines
#   ct-start.txt                    conntrack once A is offloaded
#   1. an unrelated link (vx) DOWN, then UP, while A is offloaded: first with the daemon frozen (SIGSTOP: the
#      kernel's own cost), then with the daemon running
#      downup.json                  {"baseline": {"slowPathA"}, "daemon": {"slowPathA", "handleBefore",
#                                   "handleAfter", "devicesWhileDown", "devicesAfter", "logLineBefore",
#                                   "logLineAfter", "synced"}}
#      ct-downup.txt                conntrack after it
#   2. vb deleted and created again under its name in one `ip -batch` (del, add, up), as a CNI does when a
#      pod restarts; then a new connection B through it
#      recreate.json                {"batchAt" (UTC, before the batch), "hookedAfterMs" (until nft lists vb;
#                                   -1: never), "devicesAfter", "slowPathB" (after B was offloaded, over 3 s),
#                                   "logLineBefore"}
#      ct-recreate.txt              conntrack with B offloaded
#      links-recreate.txt           TZ=UTC ip -ts monitor link over the re-create (when vb's events came)
#   3. vz created UP and deleted right after the daemon listed it
#      vanish.json                  {"vanished": the wrapper did it, "logLineBefore", "logLineAfter", "devices"}
#      ct-vanish.txt                conntrack after it
#   4. status.json                  GET /status of the daemon
#   devices-start.txt               the flowtable's devices once the daemon hooked the pods
#   env.json                        kernel
set -eu
. "$(dirname "$0")/lib.sh"

SVC_DIR=/tmp/services
HEALTH=127.0.0.1:9469
mkdir -p "$SVC_DIR"
echo "{\"kernel\": \"$(uname -r)\"}" >"$LAB/env.json"

WRAP=/tmp/ipwrap
REAL_IP=$(command -v ip)
mkdir -p "$WRAP"
cat >"$WRAP/ip" <<EOF
#!/bin/bash
# The real ip, except for the one listing that makes vz vanish (see the scenario's header): the daemon
# (this process's parent) is frozen before it reads the listing, vz is deleted, and the daemon goes on
# with a listing that is no longer true.
if [ "\$*" = "-json link show" ] && [ -e /tmp/stale-listing ]; then
  # Until the daemon has tried to commit the listing it was handed, any listing it makes again
  # (events that arrived meanwhile make it list once more) still shows vz: the race under test is
  # the one between a listing and its commit, not between two listings.
  if ! grep -q 'transaction refused' "$LAB/daemon.log"; then cat /tmp/stale-listing; exit 0; fi
  rm -f /tmp/stale-listing
fi
if [ "\$*" != "-json link show" ] || [ ! -e /tmp/vanish-once ]; then exec $REAL_IP "\$@"; fi
out=\$($REAL_IP "\$@") || exit \$?
if printf '%s' "\$out" | grep -Eq '"ifname":"vz","flags":\[[^]]*"UP"'; then
  rm -f /tmp/vanish-once
  kill -STOP \$PPID
  # The daemon's own link monitor stays frozen until the scenario lets it go: the daemon must find out
  # from its refused commit, not from the monitor.
  monitor=\$(pgrep -P \$PPID -f 'monitor link')
  kill -STOP \$monitor
  echo "\$monitor" >/tmp/monitor-frozen
  printf '%s\n' "\$out" | tee /tmp/stale-listing
  $REAL_IP link del vz && touch /tmp/vanished
  kill -CONT \$PPID
  exit 0
fi
printf '%s\n' "\$out"
EOF
chmod +x "$WRAP/ip"
# The daemon, and any restart of it, finds the wrapper first.
DAEMON_PATH="$WRAP:$PATH"

namespace_yaml shop | put_manifest "$SVC_DIR" namespaces.yaml
service_yaml shop a 10.96.4.10 5432/TCP | put_manifest "$SVC_DIR" a.yaml
service_yaml shop b 10.96.4.20 5432/TCP | put_manifest "$SVC_DIR" b.yaml

log "starting the daemon; building the topology"
router_init
daemon_start "$SVC_DIR" "$LAB/daemon.log" --health-listen "$HEALTH" --flowtable-exclude 'skip*'
standard_topology
add_pod server-x 4 vx
add_pod server-b 5 vb
ip link add skip0 type veth peer name skip1
ip link set skip0 up
kube_proxy_standin_init
observer_init
{
  kube_proxy_standin_element 10.96.4.10 tcp 5432 "$SERVER_IP4" 5401
  kube_proxy_standin_element 10.96.4.20 tcp 5432 "$(pod_ip4 5)" 5401
  observer_rule A 10.96.4.10 tcp 5432
  observer_rule B 10.96.4.20 tcp 5432
} | nft -f -
iperf_servers "$SERVER_NS" 5401
iperf_servers server-b 5401
log "topology up; waiting for the daemon"
daemon_wait_started "$LAB/daemon.log" 240
has_devices() { # DEV...: the flowtable hooks all of them
  local devs d
  devs=$(flowtable_devices)
  for d in "$@"; do echo "$devs" | grep -qx "$d" || return 1; done
}
wait_until 60 has_devices vc vs vx vb >/dev/null || die "the flowtable does not hook vc, vs, vx and vb"
flowtable_devices >"$LAB/devices-start.txt"
log "daemon synced: $(flowtable_devices | tr '\n' ' ')"

observer() { # NAME: the slow-path packets the observer counted for NAME
  nft list chain inet "$OBSERVER_TABLE" forward | sed -n "s/.*counter packets \([0-9]*\) bytes [0-9]* comment \"$1\".*/\1/p"
}
last_success() { curl -s --max-time 10 "http://$HEALTH/healthz" | sed -n 's/.*"lastSuccessAt":"\([^"]*\)".*/\1/p'; }
# synced_since VALUE: the daemon finished a sync after lastSuccessAt was VALUE.
synced_since() { [ "$(last_success)" != "$1" ]; }
ft_handle() { nft -a list flowtable inet slipstream ft | sed -n 's/.*# handle \([0-9]*\).*/\1/p' | head -1; }
loglines() { wc -l <"$LAB/daemon.log"; }
wait_offloaded() { # SECONDS FILE CLUSTER_IP
  local t0
  t0=$(uptime_ms)
  until conntrack_snapshot "$2" && ct_offloaded tcp "$3" 5432 "$2"; do
    [ $(($(uptime_ms) - t0)) -lt $(($1 * 1000)) ] || return 1
    sleep 0.5
  done
}

LIGHT="-b 4M -l 8K"
# shellcheck disable=SC2086
flow_start A 10.96.4.10 5432 $LIGHT
wait_offloaded 90 "$LAB/ct-start.txt" 10.96.4.10 || die "A is not offloaded"
log "A offloaded"
sleep 1

# --- 1. an unrelated link DOWN and UP -------------------------------------------------------------------
# The kernel's own cost first: the daemon frozen, so only the kernel acts.
kill -STOP "$DAEMON_PID"
b=$(observer A)
ip link set vx down
sleep 1.5
ip link set vx up
sleep 1.5
baseline=$(($(observer A) - b))
kill -CONT "$DAEMON_PID"
sleep 3
log "vx DOWN/UP with the daemon frozen: A took $baseline slow-path packets"
# Then with the daemon, each event waited for until the daemon has finished a sync after it.
line_before=$(loglines)
handle_before=$(ft_handle)
b=$(observer A)
s=$(last_success)
ip link set vx down
wait_until 60 synced_since "$s" >/dev/null && synced=true || synced=false
sleep 0.5
while_down=$(flowtable_devices | tr '\n' ' ')
s=$(last_success)
ip link set vx up
wait_until 60 synced_since "$s" >/dev/null || synced=false
sleep 1.5
slow=$(($(observer A) - b))
conntrack_snapshot "$LAB/ct-downup.txt"
cat >"$LAB/downup.json" <<EOF
{"baseline": {"slowPathA": $baseline},
 "daemon": {"slowPathA": $slow, "handleBefore": "$handle_before", "handleAfter": "$(ft_handle)",
  "devicesWhileDown": "$while_down", "devicesAfter": "$(flowtable_devices | tr '\n' ' ')",
  "logLineBefore": $line_before, "logLineAfter": $(loglines), "synced": $synced}}
EOF
log "vx DOWN/UP with the daemon: A took $slow slow-path packets; flowtable handle $handle_before -> $(ft_handle)"

# --- 2. vb re-created under its name in one go ----------------------------------------------------------
line_before=$(loglines)
printf 'link del vb\nlink add vb type veth peer name eth0 netns server-b\nlink set vb up\n' >/tmp/recreate.batch
TZ=UTC ip -ts monitor link >"$LAB/links-recreate.txt" 2>&1 &
LINKMON=$!
sleep 0.5
t0=$(uptime_ms)
batch_at=$(date -u +%FT%T.%3NZ)
ip -batch /tmp/recreate.batch
# What the CNI does next: the addresses and routes of the new pair.
ip addr add "$(router_ip4 5)/24" dev vb
ip -6 addr add "$(router_ip6 5)/64" dev vb nodad
ip -n server-b addr add "$(pod_ip4 5)/24" dev eth0
ip -n server-b link set eth0 up
ip -n server-b route add default via "$(router_ip4 5)"
if wait_until 60 has_devices vb >/dev/null; then hooked=$(($(uptime_ms) - t0)); else hooked=-1; fi
kill "$LINKMON" 2>/dev/null || true
log "vb re-created; hooked again after ${hooked} ms"
# shellcheck disable=SC2086
flow_start B 10.96.4.20 5432 $LIGHT
wait_offloaded 90 "$LAB/ct-recreate.txt" 10.96.4.20 || log "B is not offloaded"
sleep 1
b=$(observer B)
sleep 3
slowB=$(($(observer B) - b))
conntrack_snapshot "$LAB/ct-recreate.txt"
echo "{\"batchAt\": \"$batch_at\", \"hookedAfterMs\": $hooked, \"devicesAfter\": \"$(flowtable_devices | tr '\n' ' ')\", \"slowPathB\": $slowB, \"logLineBefore\": $line_before}" >"$LAB/recreate.json"
log "B: $slowB slow-path packets over 3 s after it was offloaded"

# --- 3. a link that vanishes between the daemon's listing and its commit --------------------------------
line_before=$(loglines)
# vz's link events reach the daemon at once (its monitor frozen meanwhile), so that one listing follows them:
# the one that sees vz UP, and makes it vanish.
monitor=$(pgrep -P "$DAEMON_PID" -f 'monitor link')
kill -STOP "$monitor"
ip link add vz type veth peer name vz1
ip link set vz up
sleep 1.5
touch /tmp/vanish-once
kill -CONT "$monitor"
vanished() { [ -e /tmp/vanished ]; }
wait_until 60 vanished >/dev/null && gone=true || gone=false
refused() { grep -q 'transaction refused' "$LAB/daemon.log"; }
wait_until 60 refused >/dev/null || log "no refused transaction in the daemon's log"
[ -e /tmp/monitor-frozen ] && kill -CONT "$(cat /tmp/monitor-frozen)"
sleep 2
conntrack_snapshot "$LAB/ct-vanish.txt"
echo "{\"vanished\": $gone, \"logLineBefore\": $line_before, \"logLineAfter\": $(loglines), \"devices\": \"$(flowtable_devices | tr '\n' ' ')\"}" >"$LAB/vanish.json"
log "vz vanished after the daemon listed it: $gone"

# --- 4. status ------------------------------------------------------------------------------------------
curl -s --max-time 30 "http://$HEALTH/status" >"$LAB/status.json"
flows_stop
log done
