#!/bin/bash
# The core of `npm run demo`: a small Kubernetes node made of network namespaces, the real daemon on the example
# Services (deploy/examples), long flows through the ClusterIP of media/iperf3, and what Slipstream did with
# them: the throughput of the same flow with and without offload, and `slipstream status` during a flow
# (OFFLOADED, bytes). Its stdout is what a newcomer reads: short, and its last line says what was shown.
#
# Runs as root in the network namespace that plays the node (and router): the VM's root netns (test/kernel/demo.ts,
# where the host kernel has no flowtables) or a private netns on the host (scripts/demo.sh). Pod netns names get
# DEMO_NS_PREFIX, so that on a host they are this run's own.
#
#   client pod (10.0.1.2) -- vc [node: kube-proxy-style DNAT, DEMO_FIREWALL_RULES firewall rules, Slipstream] vs -- server pod (10.0.2.2)
#   media/iperf3 10.96.20.20:5201/TCP -> server pod :5201 (iperf3 -s)
#
# Without offload = media/iperf3 annotated slipstream.dev/acceleration: disabled (a manifest sorting after the
# examples overrides it; deleting it restores the example), so both flows cross the same node, rules and daemon.
#
# Evidence in $LAB (asserted by test/kernel/demo.test.ts):
#   daemon.log                 the daemon's JSON log lines
#   iperf-off.txt, iperf-on.txt   iperf3 -c output of the two measured flows; ct-off.txt, ct-on.txt: conntrack
#                              during each
#   status-1.txt, status-2.txt `slipstream status` (the table), two readings during one long flow
#   ct-1.txt, ct-2.txt         conntrack right after each reading
#   flowtable.txt              nft list flowtable inet slipstream ft
#   demo.json                  {"offMbps", "onMbps", "bytesFrom", "readings": [{"atMs", "offloaded", "bytes"}, ...]}
#   timeline.txt               seconds since the start at each step
# Env: DEMO_NS_PREFIX (""), DEMO_SECS (seconds per measured flow, 4), DEMO_FIREWALL_RULES (500),
#      DEMO_WHERE (where this runs, for the last line), DEMO_WORK (scratch directory, /tmp/slipstream-demo).
set -eu
. "$(dirname "$0")/lib.sh"

CLIENT_NS=${DEMO_NS_PREFIX:-}client
SERVER_NS=${DEMO_NS_PREFIX:-}server
SECS=${DEMO_SECS:-4}
RULES=${DEMO_FIREWALL_RULES:-500}
WHERE=${DEMO_WHERE:-this machine}
WORK=${DEMO_WORK:-/tmp/slipstream-demo}
SVC_DIR=$WORK/services
SVC=10.96.20.20
PORT=5201
OVERRIDE=zz-demo-iperf3-disabled.yaml
# Every node process of the demo shares one compile cache: $LAB/compile-cache if the caller filled one
# (test/kernel/demo.ts does, on the host, before the VM boots), else one in $WORK.
if [ -d "$LAB/compile-cache" ]; then export NODE_COMPILE_CACHE=$LAB/compile-cache; else export NODE_COMPILE_CACHE=$WORK/node-compile-cache; fi

secs_since() { awk -v a="$1" -v b="$(uptime_ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
say() { echo "$*"; }
# mark WHAT: a line in $LAB/timeline.txt, seconds since the scenario started (where the time goes).
T_START=$(uptime_ms)
mark() { echo "$(secs_since "$T_START") $*" >>"$LAB/timeline.txt"; }
# mbps FILE: the receiver's Mbit/s in iperf3 -f m output.
mbps() { awk '/receiver/ { v = $(NF - 2) } END { if (v == "") exit 1; print v }' "$1"; }
# status_row FILE: the status table's header and the row of media/iperf3 5201/TCP.
status_row() { grep -E "^SERVICE |^media/iperf3 +$PORT/TCP " "$1"; }
# column FILE HEADER: the cell under HEADER (e.g. OFFLOADED) in the media/iperf3 5201/TCP row of a status
# table; a column runs from where its header starts to where the next one starts.
column() {
  awk -v want="$2" -v port="$PORT/TCP" '
    /^SERVICE / { from = index($0, want); rest = substr($0, from + length(want)); to = match(rest, /[^ ]/) ? from + length(want) + RSTART - 1 : 0 }
    from && $1 == "media/iperf3" && $2 == port { c = to ? substr($0, from, to - from) : substr($0, from); gsub(/ /, "", c); print c }' "$1"
}
# The bytes of the offloaded connection at a reading. From conntrack for now: `slipstream status` does not
# report bytes per Service port yet. Once it does, take them from status-N.txt here (column FILE BYTES).
reading_bytes() { # N
  ct_bytes tcp "$SVC" "$PORT" "$LAB/ct-$1.txt"
}
human_bytes() { awk -v b="$1" 'BEGIN { if (b >= 1e9) printf "%.2f GB", b / 1e9; else if (b >= 1e6) printf "%.1f MB", b / 1e6; else printf "%.0f kB", b / 1e3 }'; }

# measure NAME: one iperf3 flow of SECS seconds to the ClusterIP, conntrack taken while it runs.
measure() {
  local name=$1 pid
  ip netns exec "$CLIENT_NS" iperf3 -c "$SVC" -p "$PORT" -t "$SECS" -f m >"$LAB/iperf-$name.txt" 2>&1 &
  pid=$!
  sleep 2
  conntrack_snapshot "$LAB/ct-$name.txt"
  wait "$pid" || die "iperf3 ($name) failed: $(tail -3 "$LAB/iperf-$name.txt")"
}

# One status reading: the table, then conntrack, then the time (ms since boot) it was taken.
status_reading() { # N
  "$NODE" daemon/src/status-main.ts --services "$SVC_DIR" >"$LAB/status-$1.txt" 2>&1 || true
  conntrack_snapshot "$LAB/ct-$1.txt"
  uptime_ms >"$LAB/at-$1.txt"
}

mkdir -p "$SVC_DIR"
cp deploy/examples/*.yaml "$SVC_DIR/"
service_yaml media iperf3 "$SVC" 5201/TCP,5201/UDP slipstream.dev/acceleration=disabled | put_manifest "$SVC_DIR" "$OVERRIDE"

# The daemon first: its start (tens of seconds under emulation) overlaps with building the node.
t0=$(uptime_ms)
router_init
daemon_start "$SVC_DIR" "$LAB/daemon.log"
standard_topology
kube_proxy_standin_init
kube_proxy_standin_add_service "$SVC" tcp "$PORT" "$SERVER_IP4"
firewall_init "$RULES"
iperf_servers "$SERVER_NS" "$PORT"
mark node-built
say "node: client pod $CLIENT_IP4 -> ClusterIP $SVC:$PORT (media/iperf3) -> server pod $SERVER_IP4,"
say "      kube-proxy-style DNAT, $RULES firewall rules in the forward path (a stand-in for NetworkPolicy)"
say "starting the real daemon on the example Services (deploy/examples)..."
daemon_wait_started "$LAB/daemon.log" 240
grep -q '"trigger":"startup".*"degraded":true' "$LAB/daemon.log" &&
  die "the daemon runs degraded: this kernel has no flowtable support ($(uname -r))"
has_pod_devices() { [ "$(flowtable_devices | grep -cxE "$CLIENT_IF|$SERVER_IF")" = 2 ]; }
wait_until 60 has_pod_devices >/dev/null || die "the flowtable does not hook $CLIENT_IF and $SERVER_IF"
mark daemon-up
say "daemon: up in $(secs_since "$t0" | cut -d. -f1) s; flowtable on the pod links $CLIENT_IF, $SERVER_IF"

# Warm-up (not measured): the first flow after boot pays for cold caches.
ip netns exec "$CLIENT_NS" iperf3 -c "$SVC" -p "$PORT" -t 1 >/dev/null 2>&1 || true
measure off
mark measured-off
slipstream_has_element "$SVC" tcp "$PORT" && die "media/iperf3 is in the kernel although it is disabled"
rm -f "$SVC_DIR/$OVERRIDE"
wait_until 30 slipstream_has_element "$SVC" tcp "$PORT" >/dev/null || die "the daemon did not program media/iperf3"
measure on
mark measured-on
off=$(mbps "$LAB/iperf-off.txt") || die "no throughput in iperf-off.txt"
on=$(mbps "$LAB/iperf-on.txt") || die "no throughput in iperf-on.txt"
ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.2f", a / b }')
on_r=$(printf '%.0f' "$on")
off_r=$(printf '%.0f' "$off")
say "the same iperf3 flow to media/iperf3, $SECS s each, measured just now:"
say "  without offload  $(printf '%6s' "$off_r") Mbit/s   (the Service annotated slipstream.dev/acceleration: disabled)"
say "  with offload     $(printf '%6s' "$on_r") Mbit/s   ${ratio}x"

# A long flow (rate-limited, so that the emulated CPUs are left to the status commands) and two status readings
# taken while it runs; they load at the same time, the second started a few seconds after the first.
flow_start long "$SVC" "$PORT" -b 20M -l 8K
wait_until 30 ct_offloaded tcp "$SVC" "$PORT" >/dev/null || die "the long flow to media/iperf3 was not offloaded"
mark long-flow-offloaded
say "slipstream status, twice during a long flow to media/iperf3 (npm run status -- --services DIR):"
status_reading 1 &
r1=$!
sleep 3
status_reading 2 &
r2=$!
wait "$r1" "$r2"
mark status-read
flows_stop
nft list flowtable inet slipstream ft >"$LAB/flowtable.txt" 2>&1 || true
kill -TERM "$DAEMON_PID" 2>/dev/null || true
wait "$DAEMON_PID" 2>/dev/null || true

for n in 1 2; do
  grep -q "^media/iperf3 " "$LAB/status-$n.txt" || die "status reading $n failed: $(tail -5 "$LAB/status-$n.txt")"
done
b1=$(reading_bytes 1)
b2=$(reading_bytes 2)
a1=$(cat "$LAB/at-1.txt")
a2=$(cat "$LAB/at-2.txt")
status_row "$LAB/status-1.txt" | head -1 | sed 's/^/  /'
status_row "$LAB/status-1.txt" | tail -n +2 | sed 's/^/  /'
status_row "$LAB/status-2.txt" | tail -n +2 | sed 's/^/  /'
o1=$(column "$LAB/status-1.txt" OFFLOADED)
o2=$(column "$LAB/status-2.txt" OFFLOADED)
gap=$(awk -v a="$a1" -v b="$a2" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
say "  bytes of the offloaded connection (conntrack): $(human_bytes "$b1") -> $(human_bytes "$b2"), ${gap} s apart"
grep -q '\bcounter\b' "$LAB/flowtable.txt" || [ "$b2" -gt "$b1" ] ||
  say "  (conntrack stops counting a connection once it is offloaded: the flowtable has no counter flag)"
awk '/^[a-z0-9.-]+\/[a-z0-9.-]+ / { n++; if ($0 ~ / offload /) o++ } END { printf "  status lists %d Service ports of deploy/examples: %d offloaded after their threshold, %d kept on the normal path\n", n, o, n - o }' "$LAB/status-1.txt"
printf '{"offMbps": %s, "onMbps": %s, "bytesFrom": "conntrack", "readings": [{"atMs": %s, "offloaded": "%s", "bytes": %s}, {"atMs": %s, "offloaded": "%s", "bytes": %s}]}\n' \
  "$off" "$on" "$a1" "$o1" "$b1" "$a2" "$o2" "$b2" >"$LAB/demo.json"

grown=""
[ "$b2" -gt "$b1" ] && grown=", its bytes growing"
say "Shown: the real daemon offloaded a long flow to the ClusterIP of media/iperf3 (status: OFFLOADED $o2$grown), and the same flow ran ${ratio}x as fast with offload as without ($on_r vs $off_r Mbit/s), on $WHERE."
