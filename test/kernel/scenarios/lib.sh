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

# Enables IPv4 and IPv6 forwarding in the root netns (the router) and loads the modules (a kernel may have them
# built in: then there is nothing to load, and a feature that is really missing fails where it is first used).
router_init() {
  # shellcheck disable=SC2086
  modprobe -qa $LAB_MODULES 2>/dev/null || true
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

# kube_proxy_standin_element CLUSTER_IP PROTO PORT ENDPOINT_IP [ENDPOINT_PORT]: prints the nft command (for
# nft -f, to add many in one transaction) that kube_proxy_standin_add_service runs.
kube_proxy_standin_element() {
  local vip=$1 proto=$2 port=$3 ep=$4 epport=${5:-$3} fam=v4
  case $vip in *:*) fam=v6 ;; esac
  echo "add element inet $KUBE_PROXY_STANDIN_TABLE service-ips-$fam { $vip . $proto . $port : $ep . $epport }"
}

# kube_proxy_standin_add_service CLUSTER_IP PROTO PORT ENDPOINT_IP [ENDPOINT_PORT]
# e.g. kube_proxy_standin_add_service "$SVC_IP4" tcp 5201 "$SERVER_IP4"
kube_proxy_standin_add_service() {
  local vip=$1 proto=$2 port=$3 ep=$4 epport=${5:-$3} fam=v4
  case $vip in *:*) fam=v6 ;; esac
  nft add element inet "$KUBE_PROXY_STANDIN_TABLE" "service-ips-$fam" "{ $vip . $proto . $port : $ep . $epport }"
}

# firewall_init R: (re)creates table inet firewall whose forward chain (priority filter) holds R rules that never
# match (`ip saddr 192.0.2.X tcp dport Y drop`): a stand-in for the NetworkPolicy and host firewall rules every
# forwarded packet walks on a real node. An offloaded packet skips them.
FIREWALL_TABLE=firewall
firewall_init() {
  local r=$1 i
  nft delete table inet "$FIREWALL_TABLE" 2>/dev/null || true
  {
    echo "table inet $FIREWALL_TABLE {"
    echo "  chain forward {"
    echo "    type filter hook forward priority filter; policy accept;"
    for ((i = 0; i < r; i++)); do
      echo "    ip saddr 192.0.2.$((i % 254 + 1)) tcp dport $((20000 + i)) drop"
    done
    echo "  }"
    echo "}"
  } | nft -f -
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

# ---------------------------------------------------------------------------------------------------------
# Helpers for scenarios that run the real daemon (embedded mode: Service manifests from a directory).

# Observer: a table of its own whose forward chain runs after Slipstream's (`priority filter + 10`), so its
# counters see every packet that still takes the slow path (an offloaded packet skips the forward hook).
OBSERVER_TABLE=observer

observer_init() {
  nft -f - <<NFT
table inet $OBSERVER_TABLE {
  comment "test observer: counts slow-path packets after Slipstream's forward chain"
  chain forward {
    type filter hook forward priority filter + 20; policy accept;
  }
}
NFT
}

# observer_rule NAME CLUSTER_IP PROTO PORT: prints the nft command (for nft -f) of a counter (comment NAME) of the
# slow-path packets, both directions, of connections whose original destination is CLUSTER_IP PORT/PROTO.
observer_rule() {
  local name=$1 vip=$2 proto=$3 port=$4 fam=ip
  case $vip in *:*) fam=ip6 ;; esac
  echo "add rule inet $OBSERVER_TABLE forward meta l4proto $proto ct original $fam daddr $vip ct original proto-dst $port counter comment \"$name\""
}

# observer_add NAME CLUSTER_IP PROTO PORT: adds that counter now.
observer_add() {
  observer_rule "$@" | nft -f -
}

# service_yaml NAMESPACE NAME CLUSTER_IPS PORTS [ANNOTATION=VALUE ...]: a v1 Service manifest on stdout.
#   CLUSTER_IPS: comma-separated, first = primary (dual-stack: "10.96.1.50,fd00:96::1:50")
#   PORTS: comma-separated PORT/PROTO (e.g. "5432/TCP,5201/UDP")
service_yaml() {
  local ns=$1 name=$2 ips=$3 ports=$4 kv ip p proto
  shift 4
  printf 'apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$ns"
  if [ $# -gt 0 ]; then
    printf '  annotations:\n'
    for kv in "$@"; do printf '    %s: "%s"\n' "${kv%%=*}" "${kv#*=}"; done
  fi
  printf 'spec:\n  type: ClusterIP\n  clusterIP: %s\n  clusterIPs:\n' "${ips%%,*}"
  for ip in ${ips//,/ }; do printf '    - "%s"\n' "$ip"; done
  printf '  ports:\n'
  for p in ${ports//,/ }; do
    proto=${p#*/}
    printf '    - name: p%s-%s\n      port: %s\n      protocol: %s\n' "${p%/*}" "${proto,,}" "${p%/*}" "$proto"
  done
}

# namespace_yaml NAME [LABEL=VALUE ...]: a v1 Namespace manifest on stdout.
namespace_yaml() {
  local name=$1 kv
  shift
  printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$name"
  if [ $# -gt 0 ]; then
    printf '  labels:\n'
    for kv in "$@"; do printf '    %s: "%s"\n' "${kv%%=*}" "${kv#*=}"; done
  fi
}

# put_manifest DIR FILE < manifest: replaces DIR/FILE atomically (written under a dot name, which the
# daemon's file source skips, then renamed), so the daemon never reads half a file.
put_manifest() {
  cat >"$1/.$2.tmp" && mv -f "$1/.$2.tmp" "$1/$2"
}

# daemon_start DIR LOGFILE [ARGS...]: starts the daemon (embedded mode, --min-sync-period 100ms) in the
# background, JSON log lines to LOGFILE; sets DAEMON_PID. DAEMON_PATH, when set, is the daemon's PATH (e.g.
# with a wrapper in front of a command it runs).
daemon_start() {
  DAEMON_DIR=$1 DAEMON_LOG=$2
  shift 2
  DAEMON_ARGS=("$@")
  PATH="${DAEMON_PATH:-$PATH}" OTEL_TRACES_EXPORTER=none "$NODE" daemon/src/main.ts --services "$DAEMON_DIR" --min-sync-period 100ms "$@" \
    </dev/null >/dev/null 2>>"$DAEMON_LOG" &
  DAEMON_PID=$!
}

# wait_log FILE PATTERN [SECONDS]: waits until a line of FILE matches the extended regex PATTERN.
wait_log() {
  local f=$1 pat=$2 secs=${3:-60} t0
  t0=$(uptime_ms)
  until grep -Eq -- "$pat" "$f" 2>/dev/null; do
    [ $(($(uptime_ms) - t0)) -lt $((secs * 1000)) ] || die "no line matching '$pat' in $f after ${secs}s"
    sleep 0.1
  done
}

# daemon_wait_started LOGFILE [SECONDS]: waits for the start-up sync (written or adopted) of the daemon that
# daemon_start started last. If that process dies first (under qemu TCG, Node 24 now and then dies of SIGSEGV
# or SIGTRAP while loading its modules, before it prints anything), its log is kept as LOGFILE.crash-N, the
# crash is noted in $LAB/daemon-crashes.txt (the suites print it) and the daemon is started again; a third
# death fails the scenario.
daemon_wait_started() {
  local f=$1 secs=${2:-90} t0 rc crashes=0
  t0=$(uptime_ms)
  until grep -q '"trigger":"startup"' "$f" 2>/dev/null; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
      wait "$DAEMON_PID" && rc=0 || rc=$?
      crashes=$((crashes + 1))
      mv "$f" "$f.crash-$crashes"
      echo "$(basename "$f"): the daemon exited with status $rc before its start-up sync; log: $(basename "$f").crash-$crashes" >>"$LAB/daemon-crashes.txt"
      log "the daemon exited with status $rc before its start-up sync; its log:"
      tail -20 "$f.crash-$crashes" >&2 || true
      [ "$crashes" -lt 3 ] || die "the daemon died $crashes times before its start-up sync"
      daemon_start "$DAEMON_DIR" "$f" "${DAEMON_ARGS[@]}"
    fi
    [ $(($(uptime_ms) - t0)) -lt $((secs * 1000)) ] || die "no start-up sync in $f after ${secs}s"
    sleep 0.1
  done
}

# slipstream_has_element CLUSTER_IP PROTO PORT: whether Slipstream's svc4/svc6 map holds the element.
slipstream_has_element() {
  local vip=$1 proto=$2 port=$3 map=svc4
  case $vip in *:*) map=svc6 ;; esac
  nft list map inet slipstream "$map" 2>/dev/null | tr -d '\n\t' | grep -Eq "(^|[{ ,])$vip \. $proto \. $port :"
}

# wait_until SECONDS CMD...: runs CMD every 100 ms until it succeeds; fails after SECONDS. Prints the
# milliseconds it took.
wait_until() {
  local secs=$1 t0
  shift
  t0=$(uptime_ms)
  until "$@"; do
    [ $(($(uptime_ms) - t0)) -lt $((secs * 1000)) ] || return 1
    sleep 0.1
  done
  echo $(($(uptime_ms) - t0))
}

# flowtable_devices: the devices of Slipstream's flowtable, one per line.
flowtable_devices() {
  nft list flowtable inet slipstream ft 2>/dev/null | sed -n 's/.*devices = { *\(.*\) *}.*/\1/p' | tr -d ' ' | tr ',' '\n'
}

# ct_offloaded PROTO CLUSTER_IP PORT [FILE]: whether a connection to CLUSTER_IP:PORT is [OFFLOAD] (in FILE, a
# conntrack_snapshot, or now).
ct_offloaded() {
  local proto=$1 vip=$2 port=$3 f=${4:-}
  if [ -z "$f" ]; then
    { conntrack -L -f ipv4 2>/dev/null; conntrack -L -f ipv6 2>/dev/null; } |
      grep -Eq "^$proto .* dst=$vip .*dport=$port .*\[OFFLOAD\]"
    return
  fi
  grep -Eq "^$proto .* dst=$vip .*dport=$port .*\[OFFLOAD\]" "$f"
}

# iperf_servers NS PORT...: one iperf3 server per port in netns NS (an iperf3 server runs one test at a time).
iperf_servers() {
  local ns=$1 port
  shift
  for port in "$@"; do ip netns exec "$ns" iperf3 -s -D -p "$port"; done
  for port in "$@"; do wait_listen "$ns" "$port" 60; done
}

# A TCP connection that has ended (an earlier flow to the same port) is never the one a scenario measures.
CT_CLOSED=' (TIME_WAIT|CLOSE|CLOSE_WAIT|LAST_ACK|FIN_WAIT) '

# ct_packets PROTO CLUSTER_IP PORT FILE: the most packets (original + reply direction) that one live connection
# to CLUSTER_IP:PORT has in FILE (a conntrack_snapshot); 0 if there is none.
ct_packets() {
  grep -E "^$1 .* dst=$2 .*dport=$3 " "$4" 2>/dev/null | grep -vE "$CT_CLOSED" |
    awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^packets=/) { sub(/^packets=/, "", $i); n += $i } if (n > m) m = n } END { print m + 0 }'
}

# ct_bytes PROTO CLUSTER_IP PORT FILE: bytes (original + reply direction) of the [OFFLOAD] connection to
# CLUSTER_IP:PORT with the most bytes in FILE (a conntrack_snapshot); 0 if there is none. Without the flowtable's
# `counter` flag conntrack stops counting a connection once it is offloaded.
ct_bytes() {
  grep -E "^$1 .* dst=$2 .*dport=$3 .*\[OFFLOAD\]" "$4" 2>/dev/null | grep -vE "$CT_CLOSED" |
    awk '{ n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^bytes=/) { sub(/^bytes=/, "", $i); n += $i } if (n > m) m = n } END { print m + 0 }'
}

# Long iperf3 flows from the client pod, by key. flow_start KEY CLUSTER_IP PORT [iperf3 args...]: starts one
# (default: TCP rate-limited to 40 Mbit/s in 8 KiB writes, so that many flows leave the emulated CPUs
# responsive while each still carries ~1000 packets/s); output in $LAB/iperf-KEY.txt. flows_pause freezes
# every client (SIGSTOP: no FIN, the connections stay established, offloaded ones stay offloaded) so that
# conntrack and counters can be read from one state; flows_stop ends them.
declare -A FLOW_PID=()
flow_start() {
  local key=$1 vip=$2 port=$3
  shift 3
  [ $# -gt 0 ] || set -- -b 40M -l 8K
  ip netns exec "$CLIENT_NS" iperf3 -c "$vip" -p "$port" -t 3600 "$@" >"$LAB/iperf-$key.txt" 2>&1 &
  FLOW_PID[$key]=$!
}
flows_pause() {
  local key
  for key in "${!FLOW_PID[@]}"; do kill -STOP "${FLOW_PID[$key]}" 2>/dev/null || true; done
}
flows_stop() {
  local key
  for key in "${!FLOW_PID[@]}"; do kill -KILL "${FLOW_PID[$key]}" 2>/dev/null || true; done
  for key in "${!FLOW_PID[@]}"; do wait "${FLOW_PID[$key]}" 2>/dev/null || true; done
  FLOW_PID=()
}
# flows_running_json: {"KEY": true|false, ...}: whether each client is still there (running or paused).
flows_running_json() {
  local key sep= r
  printf '{'
  for key in "${!FLOW_PID[@]}"; do
    kill -0 "${FLOW_PID[$key]}" 2>/dev/null && r=true || r=false
    printf '%s"%s": %s' "$sep" "$key" "$r"
    sep=', '
  done
  printf '}'
}
