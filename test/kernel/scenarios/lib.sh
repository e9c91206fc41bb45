# shellcheck shell=bash
# Shared helpers for VM lab scenarios (test/kernel/scenarios/*.sh). Scenarios run as root inside the VM
# started by test/kernel/lab.ts, with cwd = repo root and $LAB = a writable directory shared with the host.
# Source this file first:
#
#   . "$(dirname "$0")/lib.sh"
#
# Topology (the VM's root network namespace is the router / "node"):
#
#   netns client (eth0) --veth-- vc  [router: root netns, forwarding on]  vs --veth-- (eth0) netns server
#
# Addressing plan, pod index N (1..254):
#   pod      IPv4 10.0.N.2/24      IPv6 fd00:0:N::2/64     (interface eth0 inside netns <name>)
#   router   IPv4 10.0.N.1/24      IPv6 fd00:0:N::1/64     (host-side veth in the root netns)
# The standard topology uses client = pod 1 (router side "vc"), server = pod 2 (router side "vs").
#
# Services: ClusterIPs are only reachable through the kube-proxy stand-in below, which DNATs
# ClusterIP:port to an endpoint, as kube-proxy's nftables mode would. It is NOT Slipstream's table: Slipstream
# (or a raw ruleset in a smoke scenario) adds its own table with the flowtable next to it.

set -eu

: "${LAB:?LAB is not set: run scenarios through runInVm() in test/kernel/lab.ts}"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Repo-local Node 24 (the checkout is at the same path inside the VM).
NODE="$PWD/node_modules/.bin/node"

SVC_IP4=10.96.0.10
SVC_IP6=fd00:96::10

CLIENT_NS=client
SERVER_NS=server
CLIENT_IF=vc
SERVER_IF=vs
CLIENT_IP4=10.0.1.2
SERVER_IP4=10.0.2.2
CLIENT_IP6=fd00:0:1::2
SERVER_IP6=fd00:0:2::2

# Name of the kube-proxy stand-in table (family inet).
KUBE_PROXY_STANDIN_TABLE=kube-proxy-standin

# log MESSAGE: console line stamped with the guest uptime (seconds since boot).
log() { echo "[scenario $(cut -d' ' -f1 /proc/uptime)s] $*"; }
die() {
  echo "[scenario] FATAL: $*" >&2
  exit 1
}

# uptime_ms: guest uptime in milliseconds (10 ms resolution), for timing loops.
uptime_ms() {
  local u
  u=$(cut -d' ' -f1 /proc/uptime)
  echo $((10#${u%.*} * 1000 + 10#${u#*.} * 10))
}

pod_ip4() { echo "10.0.$1.2"; }
pod_ip6() { echo "fd00:0:$1::2"; }
router_ip4() { echo "10.0.$1.1"; }
router_ip6() { echo "fd00:0:$1::1"; }

# Modules the scenarios use, loaded in one go: cheaper under emulation than one autoload per nft statement.
LAB_MODULES="veth nf_tables nft_chain_nat nft_nat nft_ct nf_flow_table_inet nft_flow_offload nf_conntrack_netlink"

# Enables IPv4 and IPv6 forwarding in the root netns (the router) and loads the modules.
router_init() {
  # shellcheck disable=SC2086
  modprobe -a $LAB_MODULES
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.ipv6.conf.all.forwarding=1
  sysctl -qw net.ipv6.conf.default.accept_dad=0
  sysctl -qw net.ipv6.conf.all.accept_dad=0
}

# add_pod NAME INDEX ROUTER_IF: netns NAME with eth0 (pod addresses of INDEX), veth peer ROUTER_IF in the root
# netns (router addresses), default routes of both families via the router.
add_pod() {
  local ns=$1 idx=$2 rif=$3
  ip netns add "$ns"
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0
  ip link add "$rif" type veth peer name eth0 netns "$ns"
  ip addr add "$(router_ip4 "$idx")/24" dev "$rif"
  ip -6 addr add "$(router_ip6 "$idx")/64" dev "$rif" nodad
  ip link set "$rif" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$(pod_ip4 "$idx")/24" dev eth0
  ip -n "$ns" -6 addr add "$(pod_ip6 "$idx")/64" dev eth0 nodad
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$(router_ip4 "$idx")"
  ip -n "$ns" -6 route add default via "$(router_ip6 "$idx")"
}

# The standard client/router/server topology.
standard_topology() {
  router_init
  add_pod "$CLIENT_NS" 1 "$CLIENT_IF"
  add_pod "$SERVER_NS" 2 "$SERVER_IF"
  ip netns exec "$CLIENT_NS" busybox ping -c1 -W5 "$SERVER_IP4" >/dev/null || die "client cannot reach $SERVER_IP4"
  ip netns exec "$CLIENT_NS" busybox ping -6 -c1 -W5 "$SERVER_IP6" >/dev/null || die "client cannot reach $SERVER_IP6"
}

# Stand-in for kube-proxy in nftables mode: one inet table whose nat chains DNAT
# ClusterIP . protocol . port to one endpoint address . port (maps for each family).
kube_proxy_standin_init() {
  nft -f - <<NFT
table inet $KUBE_PROXY_STANDIN_TABLE {
  comment "stand-in for kube-proxy nftables mode: ClusterIP DNAT only"
  map service-ips-v4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }
  map service-ips-v6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }
  chain nat-prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    dnat ip to ip daddr . meta l4proto . th dport map @service-ips-v4
    dnat ip6 to ip6 daddr . meta l4proto . th dport map @service-ips-v6
  }
  chain nat-output {
    type nat hook output priority -100; policy accept;
    dnat ip to ip daddr . meta l4proto . th dport map @service-ips-v4
    dnat ip6 to ip6 daddr . meta l4proto . th dport map @service-ips-v6
  }
}
NFT
}

# kube_proxy_standin_add_service CLUSTER_IP PROTO PORT ENDPOINT_IP [ENDPOINT_PORT]
# e.g. kube_proxy_standin_add_service "$SVC_IP4" tcp 5201 "$SERVER_IP4"
kube_proxy_standin_add_service() {
  local vip=$1 proto=$2 port=$3 ep=$4 epport=${5:-$3} fam=v4
  case $vip in *:*) fam=v6 ;; esac
  nft add element inet "$KUBE_PROXY_STANDIN_TABLE" "service-ips-$fam" "{ $vip . $proto . $port : $ep . $epport }"
}

# wait_listen NS PORT [SECONDS]: waits until something listens on TCP PORT inside netns NS.
wait_listen() {
  local ns=$1 port=$2 secs=${3:-20} i=0
  while ! ip netns exec "$ns" ss -Hltn "sport = :$port" | grep -q .; do
    i=$((i + 1))
    [ "$i" -le $((secs * 10)) ] || die "nothing listens on port $port in netns $ns after ${secs}s"
    sleep 0.1
  done
}

# conntrack_snapshot FILE: conntrack table of both families (conntrack -L lists one family at a time).
conntrack_snapshot() {
  {
    conntrack -L -f ipv4 2>/dev/null
    conntrack -L -f ipv6 2>/dev/null
  } >"$1" || true
}
