#!/bin/bash
# Churn benchmark (test/bench/churn.bench.ts): what each way of handling link events and evictions costs an
# offloaded flow on this kernel, measured with the raw ruleset Slipstream writes (no daemon: each option is
# applied by hand, so every option is measured on the same flows in one VM boot). Per-connection slow-path
# packets are counted by the observer table (forward hook, after Slipstream's chain).
#
# Topology: lib.sh's standard client -- router -- server, plus server-x (4, vx: an unrelated pod) and
# server-b (5, vb). Light long flows (iperf3 -b 4M): A (IPv4) and C (IPv6) through vc/vs, offloaded.
#
#   1. an unrelated link (vx) DOWN then UP, REPS times per way of handling it:
#        kernel     the flowtable untouched (DOWN links stay hooked: what the daemon does)
#        inplace    vx removed from the flowtable in place at DOWN, added at UP
#        recreate   the flowtable deleted and re-created at DOWN and at UP
#      downup-MODE-REP.txt    "A C": slow-path packets of each flow over the DOWN and UP
#   2. vb deleted and created again under its name in one ip -batch, then a new flow B through it:
#        unhooked   nothing done (the kernel dropped the hook)       recreate-unhooked.txt  "B" over 3 s
#        rehooked   vb added to the flowtable again                  recreate-rehooked.txt  "B" over 3 s
#   3. evicting an offloaded flow E (a fresh one each time) whose element is removed, REPS times:
#        recreate   element deleted and the flowtable re-created in one transaction
#                   evict-recreate-REP.txt  "msCommit E-offloaded-after A C E-slow-2s"
#        element    element deleted only       evict-element.txt    "E-offloaded-after E-slow-2s"
#        ctdelete   conntrack -D of E's entry  evict-ctdelete.txt   "alive|reset" (its iperf3 client, 3 s after)
#   4. counters: A's conntrack packets over 2 s, flowtable with the counter flag, then without it
#      counters.txt  "with without"
#   env.json, done.json
set -eu
. "$(dirname "$0")/lib.sh"

REPS=${REPS:-5}
echo "{\"kernel\": \"$(uname -r)\", \"nproc\": $(nproc), \"reps\": $REPS}" >"$LAB/env.json"
router_init
standard_topology
add_pod server-x 4 vx
add_pod server-b 5 vb
kube_proxy_standin_init
observer_init
{
  kube_proxy_standin_element 10.96.0.10 tcp 5432 "$SERVER_IP4" 5401
  kube_proxy_standin_element fd00:96::10 tcp 5432 "$SERVER_IP6" 5402
  kube_proxy_standin_element 10.96.0.20 tcp 5432 "$(pod_ip4 5)" 5403
  observer_rule A 10.96.0.10 tcp 5432
  observer_rule C fd00:96::10 tcp 5432
  observer_rule B 10.96.0.20 tcp 5432
  for i in $(seq 1 $((REPS + 2))); do
    kube_proxy_standin_element "10.96.1.$i" tcp 5432 "$SERVER_IP4" $((5410 + i))
    observer_rule "E$i" "10.96.1.$i" tcp 5432
  done
} | nft -f -
ELEMENTS="10.96.0.10 . tcp . 5432 : jump threshold-20, 10.96.0.20 . tcp . 5432 : jump threshold-20"
for i in $(seq 1 $((REPS + 2))); do ELEMENTS="$ELEMENTS, 10.96.1.$i . tcp . 5432 : jump threshold-20"; done
DEVICES='"vc", "vs", "vx", "vb"'
nft -f - <<NFT
table inet slipstream {
  flowtable ft { hook ingress priority 0; devices = { $DEVICES }; counter; }
  map svc4 { type ipv4_addr . inet_proto . inet_service : verdict; elements = { $ELEMENTS } }
  map svc6 { type ipv6_addr . inet_proto . inet_service : verdict; elements = { fd00:96::10 . tcp . 5432 : jump threshold-20 } }
  chain threshold-20 {
    ct packets > 20 counter flow add @ft
  }
  chain forward {
    type filter hook forward priority 10; policy accept;
    meta l4proto tcp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4
    meta l4proto tcp ct original ip6 daddr . ct protocol . ct original proto-dst vmap @svc6
  }
}
NFT
iperf_servers "$SERVER_NS" 5401 5402 $(seq 5411 $((5410 + REPS + 2)))
iperf_servers server-b 5403

observer() { # NAME
  nft list chain inet "$OBSERVER_TABLE" forward | sed -n "s/.*counter packets \([0-9]*\) bytes [0-9]* comment \"$1\".*/\1/p"
}
offloaded() { ct_offloaded tcp "$1" 5432; }
wait_offloaded() { # CLUSTER_IP...
  local vip
  for vip in "$@"; do wait_until 60 offloaded "$vip" >/dev/null || die "$vip is not offloaded"; done
}
recreate_ft() { # [COUNTER]: delete and add the flowtable in one transaction (optionally without the counter flag)
  nft -f - <<NFT
flush chain inet slipstream threshold-20
delete flowtable inet slipstream ft
add flowtable inet slipstream ft { hook ingress priority 0; devices = { $DEVICES }; ${1-counter;} }
add rule inet slipstream threshold-20 ct packets > 20 counter flow add @ft
NFT
}
LIGHT="-b 4M -l 8K"
# shellcheck disable=SC2086
flow_start A 10.96.0.10 5432 $LIGHT
# shellcheck disable=SC2086
flow_start C fd00:96::10 5432 $LIGHT
wait_offloaded 10.96.0.10 fd00:96::10
sleep 1
log "A and C offloaded"

# --- 1. unrelated link DOWN and UP ----------------------------------------------------------------------
for mode in kernel inplace recreate; do
  for rep in $(seq 1 "$REPS"); do
    a=$(observer A)
    c=$(observer C)
    ip link set vx down
    case $mode in
      inplace) nft delete flowtable inet slipstream ft '{ devices = { "vx" }; }' ;;
      recreate) DEVICES='"vc", "vs", "vb"' recreate_ft ;;
    esac
    sleep 1
    ip link set vx up
    case $mode in
      inplace) nft add flowtable inet slipstream ft '{ hook ingress priority 0; devices = { "vx" }; counter; }' ;;
      recreate) recreate_ft ;;
    esac
    sleep 1.5
    echo "$(($(observer A) - a)) $(($(observer C) - c))" >"$LAB/downup-$mode-$rep.txt"
  done
  log "link DOWN/UP, $mode: $(cat "$LAB"/downup-$mode-*.txt | tr '\n' ' ')"
done

# --- 2. a link re-created under its name ----------------------------------------------------------------
recreate_vb() {
  printf 'link del vb\nlink add vb type veth peer name eth0 netns server-b\nlink set vb up\n' | ip -batch -
  ip addr add "$(router_ip4 5)/24" dev vb
  ip -n server-b addr add "$(pod_ip4 5)/24" dev eth0
  ip -n server-b link set eth0 up
  ip -n server-b route add default via "$(router_ip4 5)"
}
for mode in unhooked rehooked; do
  recreate_vb
  [ "$mode" = rehooked ] && nft add flowtable inet slipstream ft '{ hook ingress priority 0; devices = { "vb" }; counter; }'
  # shellcheck disable=SC2086
  flow_start "B$mode" 10.96.0.20 5432 $LIGHT
  wait_offloaded 10.96.0.20
  sleep 1
  b=$(observer B)
  sleep 3
  echo "$(($(observer B) - b))" >"$LAB/recreate-$mode.txt"
  kill -KILL "${FLOW_PID[B$mode]}"
  wait "${FLOW_PID[B$mode]}" 2>/dev/null || true
  unset "FLOW_PID[B$mode]"
  sleep 1
  log "re-created link, $mode: B took $(cat "$LAB/recreate-$mode.txt") slow-path packets in 3 s"
done

# --- 3. evictions ---------------------------------------------------------------------------------------
evict_flow() { # N: starts flow E<N> and waits until it is offloaded
  # shellcheck disable=SC2086
  flow_start "E$1" "10.96.1.$1" 5432 $LIGHT
  wait_offloaded "10.96.1.$1"
  sleep 1
}
for rep in $(seq 1 "$REPS"); do
  evict_flow "$rep"
  a=$(observer A)
  c=$(observer C)
  t0=$(uptime_ms)
  nft -f - <<NFT
delete element inet slipstream svc4 { 10.96.1.$rep . tcp . 5432 }
flush chain inet slipstream threshold-20
delete flowtable inet slipstream ft
add flowtable inet slipstream ft { hook ingress priority 0; devices = { $DEVICES }; counter; }
add rule inet slipstream threshold-20 ct packets > 20 counter flow add @ft
NFT
  ms=$(($(uptime_ms) - t0))
  sleep 0.5
  offloaded "10.96.1.$rep" && still=1 || still=0
  e=$(observer "E$rep")
  sleep 2
  echo "$ms $still $(($(observer A) - a)) $(($(observer C) - c)) $(($(observer "E$rep") - e))" >"$LAB/evict-recreate-$rep.txt"
  kill -KILL "${FLOW_PID[E$rep]}"
done
log "evict by re-creating the flowtable: $(cat "$LAB"/evict-recreate-*.txt | tr '\n' ' ')"
n=$((REPS + 1))
evict_flow "$n"
nft delete element inet slipstream svc4 "{ 10.96.1.$n . tcp . 5432 }"
sleep 0.5
offloaded "10.96.1.$n" && still=1 || still=0
e=$(observer "E$n")
sleep 2
echo "$still $(($(observer "E$n") - e))" >"$LAB/evict-element.txt"
kill -KILL "${FLOW_PID[E$n]}"
log "evict by deleting the element only: $(cat "$LAB/evict-element.txt")"
n=$((REPS + 2))
evict_flow "$n"
sport=$(conntrack -L -f ipv4 2>/dev/null | grep -E "dst=10.96.1.$n .*dport=5432 .*OFFLOAD" | grep -o 'sport=[0-9]*' | head -1 | cut -d= -f2)
conntrack -D -p tcp --orig-dst "10.96.1.$n" --sport "$sport" >/dev/null 2>&1 || true
sleep 3
kill -0 "${FLOW_PID[E$n]}" 2>/dev/null && echo alive >"$LAB/evict-ctdelete.txt" || echo reset >"$LAB/evict-ctdelete.txt"
log "evict by deleting the conntrack entry: $(cat "$LAB/evict-ctdelete.txt")"

# --- 4. counters ----------------------------------------------------------------------------------------
a_packets() { # conntrack's packets (both directions) of A's offloaded connection
  conntrack -L -f ipv4 2>/dev/null | grep -E "dst=10.96.0.10 .*dport=5432 .*OFFLOAD" |
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^packets=/) { sub(/^packets=/, "", $i); n += $i } } END { print n + 0 }'
}
p=$(a_packets)
sleep 2
with=$(($(a_packets) - p))
recreate_ft ''
wait_offloaded 10.96.0.10
sleep 0.5
p=$(a_packets)
sleep 2
without=$(($(a_packets) - p))
echo "$with $without" >"$LAB/counters.txt"
log "conntrack packets of an offloaded flow in 2 s: $with with the counter flag, $without without"

flows_stop
echo '{"done": true}' >"$LAB/done.json"
log done
