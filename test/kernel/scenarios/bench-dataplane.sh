#!/bin/bash
# Data-plane benchmark (test/bench/dataplane.bench.ts): the ruleset the real daemon programs, on and off,
# under forward paths of different lengths. One VM boot; every measurement is written to $LAB as raw output
# and the TypeScript side computes medians and ratios.
#
# Topology: lib.sh's standard client -- router -- server. Services (kube-proxy stand-in DNAT):
#   shop/bulk   10.96.3.10:5432/TCP -> server:5201  (iperf3; policy sql-databases, threshold 20)
#   shop/short  10.96.3.11:5432/TCP -> server:7001  (dataplane-shortflow.ts server; same policy)
# "on": the ruleset the daemon programmed in this VM (it runs once, is stopped with SIGTERM, and its table
# is saved with `nft list table inet slipstream` to $LAB/slipstream.nft), loaded with nft -f.
# "off": no slipstream table, and conntrack accounting off (as on a node that never loaded Slipstream).
# Forward path: table inet firewall, a forward chain (priority filter) of R rules that never match
# (`ip saddr 192.0.2.X tcp dport Y drop`), standing in for NetworkPolicy/firewall rules.
# Observer: table inet observer (priority filter + 20) counts the forwarded packets per destination.
#
# Per rule count R (RULES) and repetition (REPS; on/off order alternates per repetition):
#   long-R-MODE-REP.json       iperf3 -J, SECS seconds, to the ClusterIP
#   pod-R-on-REP.json          iperf3 -J to the pod IP (no DNAT, so never offloaded), with the rules on
#   observer-R-MODE-REP.txt    "before after" forwarded packets of the ClusterIP flow (observer counter)
# At R = SHORT_RULES, per repetition (SHORT_REPS) and mode:
#   short-MODE-REP.json        {"connections", "failed", "ms", "perSecond"} of SHORT_COUNT short connections
#   short-MODE-REP.txt         "threshold-20 counter" (on): packets that crossed the threshold (expect 0)
# Also: env.json (kernel), daemon.log, slipstream.nft, done.json.
set -eu
. "$(dirname "$0")/lib.sh"

REPS=${REPS:-5}
SHORT_REPS=${SHORT_REPS:-9}
SECS=${SECS:-5}
RULES=${RULES:-"0 500 2000"}
SHORT_RULES=${SHORT_RULES:-500}
SHORT_COUNT=${SHORT_COUNT:-400}
SHORT_CONC=${SHORT_CONC:-4}
SVC_DIR=/tmp/services
mkdir -p "$SVC_DIR"
echo "{\"kernel\": \"$(uname -r)\", \"nproc\": $(nproc), \"reps\": $REPS, \"secs\": $SECS, \"rules\": \"$RULES\", \"shortReps\": $SHORT_REPS, \"shortCount\": $SHORT_COUNT, \"shortConcurrency\": $SHORT_CONC}" >"$LAB/env.json"

namespace_yaml shop | put_manifest "$SVC_DIR" namespaces.yaml
service_yaml shop bulk 10.96.3.10 5432/TCP | put_manifest "$SVC_DIR" bulk.yaml
service_yaml shop short 10.96.3.11 5432/TCP | put_manifest "$SVC_DIR" short.yaml

log "starting the daemon; building the topology"
# Kernel modules first: the daemon died a few times (SIGSEGV/SIGTRAP, see daemon_wait_started) when it
# started while modprobe was loading them.
router_init
daemon_start "$SVC_DIR" "$LAB/daemon.log"
standard_topology
kube_proxy_standin_init
observer_init
{
  kube_proxy_standin_element 10.96.3.10 tcp 5432 "$SERVER_IP4" 5201
  kube_proxy_standin_element 10.96.3.11 tcp 5432 "$SERVER_IP4" 7001
  observer_rule bulk 10.96.3.10 tcp 5432
  observer_rule short 10.96.3.11 tcp 5432
  observer_rule pod "$SERVER_IP4" tcp 5201
} | nft -f -
iperf_servers "$SERVER_NS" 5201
ip netns exec "$SERVER_NS" "$NODE" test/bench/dataplane-shortflow.ts server 7001 2>/dev/null &
wait_listen "$SERVER_NS" 7001 120
daemon_wait_started "$LAB/daemon.log" 300
has_pod_devices() { [ "$(flowtable_devices | grep -cxE "$CLIENT_IF|$SERVER_IF")" = 2 ]; }
wait_until 60 has_pod_devices >/dev/null || die "the flowtable does not hook $CLIENT_IF and $SERVER_IF"
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID" || true
nft list table inet slipstream >/tmp/slipstream.nft
cp /tmp/slipstream.nft "$LAB/slipstream.nft"
log "the daemon programmed the table (saved); measuring"

slipstream() { # on|off
  if [ "$1" = on ]; then
    nft list table inet slipstream >/dev/null 2>&1 || nft -f /tmp/slipstream.nft
  else
    nft delete table inet slipstream 2>/dev/null || true
    sysctl -qw net.netfilter.nf_conntrack_acct=0
  fi
}
observer_packets() { # NAME
  nft list chain inet "$OBSERVER_TABLE" forward | sed -n "s/.*counter packets \([0-9]*\) .*comment \"$1\".*/\1/p"
}
long() { # NAME TARGET PORT: one iperf3 run
  local name=$1 target=$2 port=$3
  ip netns exec "$CLIENT_NS" iperf3 -c "$target" -p "$port" -t "$SECS" -J >"$LAB/$name.json" 2>&1 ||
    log "iperf3 $name failed"
}

# Warm-up, not measured: the first runs after boot pay for cold caches (and the short-flow server's JIT).
slipstream on
long warmup-long 10.96.3.10 5432
ip netns exec "$CLIENT_NS" "$NODE" test/bench/dataplane-shortflow.ts client 10.96.3.11 5432 200 "$SHORT_CONC" \
  >"$LAB/warmup-short.json" 2>&1 || log "warm-up short flows failed"

for r in $RULES; do
  firewall_init "$r"
  for ((rep = 1; rep <= REPS; rep++)); do
    if ((rep % 2)); then order="off on"; else order="on off"; fi
    for mode in $order; do
      slipstream "$mode"
      before=$(observer_packets bulk)
      long "long-$r-$mode-$rep" 10.96.3.10 5432
      echo "$before $(observer_packets bulk)" >"$LAB/observer-$r-$mode-$rep.txt"
      if [ "$mode" = on ]; then long "pod-$r-on-$rep" "$SERVER_IP4" 5201; fi
    done
    log "rules $r, repetition $rep done"
  done
  if [ "$r" = "$SHORT_RULES" ]; then
    for ((rep = 1; rep <= SHORT_REPS; rep++)); do
      if ((rep % 2)); then order="off on"; else order="on off"; fi
      for mode in $order; do
        slipstream "$mode"
        ip netns exec "$CLIENT_NS" "$NODE" test/bench/dataplane-shortflow.ts client 10.96.3.11 5432 \
          "$SHORT_COUNT" "$SHORT_CONC" >"$LAB/short-$mode-$rep.json" 2>&1 || log "short flows failed"
        if [ "$mode" = on ]; then
          nft list chain inet slipstream threshold-20 | sed -n 's/.*counter packets \([0-9]*\) .*/\1/p' >"$LAB/short-$mode-$rep.txt"
        fi
      done
      log "short flows, repetition $rep done"
    done
  fi
done
echo '{"done": true}' >"$LAB/done.json"
log done
