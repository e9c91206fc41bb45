#!/bin/bash
# Smoke test of the VM lab and the guest kernel: a TCP flow to a "ClusterIP" Service, DNAT'd by the kube-proxy
# stand-in, is offloaded to an nftables flowtable by a raw ruleset shaped like the one Slipstream programs
# (offload after `ct packets > 20` for flows whose original destination is in a set of ClusterIP . proto . port).
#
# Evidence written to $LAB (asserted by test/kernel/offload-smoke.test.ts):
#   env.json                    guest kernel release
#   iperf-v4.json, iperf-v6.json         iperf3 -J client reports (through the v4 / v6 ClusterIP)
#   conntrack-v4.txt, conntrack-v6.txt   conntrack -L (both families), taken while the transfer ran
#   snapshot-v4.json, snapshot-v6.json   whether iperf3 was still running right after that snapshot
#   forward-counter.json        nft -j list chain inet slipstream-smoke forward, after both transfers
#   ruleset.txt                 nft list ruleset at the end (for humans)
# Env: IPERF_SECS (default 4) = duration of each iperf3 transfer.
set -eu
. "$(dirname "$0")/lib.sh"

IPERF_SECS=${IPERF_SECS:-4}

echo "{\"kernel\": \"$(uname -r)\"}" >"$LAB/env.json"

log "building the topology"
standard_topology
log "topology up; loading rulesets"
kube_proxy_standin_init
for port in 5201 8080; do
  kube_proxy_standin_add_service "$SVC_IP4" tcp "$port" "$SERVER_IP4"
  kube_proxy_standin_add_service "$SVC_IP6" tcp "$port" "$SERVER_IP6"
done

nft -f - <<NFT
table inet slipstream-smoke {
  set offload-v4 { type ipv4_addr . inet_proto . inet_service; elements = { $SVC_IP4 . tcp . 5201 } }
  set offload-v6 { type ipv6_addr . inet_proto . inet_service; elements = { $SVC_IP6 . tcp . 5201 } }
  flowtable ft { hook ingress priority filter; devices = { $CLIENT_IF, $SERVER_IF }; counter; }
  chain forward {
    type filter hook forward priority filter; policy accept;
    meta l4proto tcp ct original ip daddr . ct original protocol . ct original proto-dst @offload-v4 ct packets > 20 flow add @ft
    meta l4proto tcp ct original ip6 daddr . ct original protocol . ct original proto-dst @offload-v6 ct packets > 20 flow add @ft
    meta nfproto ipv4 counter comment "slow-path-v4"
    meta nfproto ipv6 counter comment "slow-path-v6"
  }
}
NFT

log "rulesets loaded; starting servers"
ip netns exec "$SERVER_NS" iperf3 -s -D
ip netns exec "$SERVER_NS" busybox nc -ll -p 8080 -e /bin/cat &
wait_listen "$SERVER_NS" 5201
wait_listen "$SERVER_NS" 8080

# Negative control: a short, idle connection to a Service port that is not in the offload set.
(sleep $((IPERF_SECS * 2 + 6))) | ip netns exec "$CLIENT_NS" busybox nc "$SVC_IP4" 8080 >/dev/null &

transfer() {
  local fam=$1 vip=$2 pid
  log "iperf3 $fam to $vip:5201 for ${IPERF_SECS}s"
  ip netns exec "$CLIENT_NS" iperf3 -c "$vip" -t "$IPERF_SECS" -J >"$LAB/iperf-$fam.json" &
  pid=$!
  # Snapshot conntrack while the transfer runs: poll until the flow shows up offloaded, at least 1.5 s
  # after it first appeared (so the flowtable has synced its counters back to conntrack), or until half
  # the transfer is over. The clock starts when the flow appears: on a loaded host the emulated VM can
  # take seconds just to start iperf3 and connect.
  local t0 now running offloaded seen=false
  t0=$(uptime_ms)
  while :; do
    sleep 0.3
    conntrack_snapshot "$LAB/conntrack-$fam.txt"
    kill -0 "$pid" 2>/dev/null && running=true || running=false
    grep -q "dst=$vip .*dport=5201 .*\[OFFLOAD\]" "$LAB/conntrack-$fam.txt" && offloaded=true || offloaded=false
    now=$(uptime_ms)
    if [ "$seen" = false ] && grep -q "dst=$vip .*dport=5201 " "$LAB/conntrack-$fam.txt"; then
      seen=true
      t0=$now
    fi
    [ "$offloaded" = true ] && [ $((now - t0)) -ge 1500 ] && break
    [ "$running" = true ] || break
    [ "$seen" = true ] && [ $((now - t0)) -ge $((IPERF_SECS * 500 + 1000)) ] && break
  done
  echo "{\"iperf_running\": $running, \"uptime\": $(cut -d' ' -f1 /proc/uptime)}" >"$LAB/snapshot-$fam.json"
  wait "$pid" || die "iperf3 $fam failed (see $LAB/iperf-$fam.json)"
}
transfer v4 "$SVC_IP4"
transfer v6 "$SVC_IP6"

nft -j list chain inet slipstream-smoke forward >"$LAB/forward-counter.json"
nft list ruleset >"$LAB/ruleset.txt"
log done
