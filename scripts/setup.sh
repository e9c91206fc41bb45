#!/usr/bin/env bash
# Brings a fresh Debian 12 machine (as root) to the point where Slipstream runs and tests:
# Debian packages for nftables, the N-API addon build and the VM kernel lab, then the npm
# install that brings Node 24 and builds the addon. Idempotent: a second run does nothing
# that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# Package → why we need it.
packages=(
  nftables          # nft CLI: tests read the kernel's table back with it
  libnftables-dev   # libnftables headers and .so for shared/nftables-napi
  iproute2          # ip netns / ip link (the daemon watches links with it)
  conntrack         # conntrack -L: offload evidence in the kernel suite
  iperf3            # long flows in the kernel suite and the data-plane benchmark
  python3 make g++  # node-gyp builds the addon
  linux-image-amd64 # a kernel with flowtables, booted under qemu by test/kernel
  qemu-system-x86   # the VM for the kernel suite (TCG: no KVM needed)
  busybox-static    # the VM's initramfs
  xz-utils kmod     # unpack the kernel image; modinfo finds the modules for the initramfs
  prometheus        # a real Prometheus scrapes both components in test/e2e; promtool checks metrics and alert rules
)
command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ! command -v kubectl >/dev/null; then
  # The kubectl package where a repository carries it; Debian's own kubernetes-client otherwise.
  if apt-cache show kubectl >/dev/null 2>&1; then missing+=(kubectl); else missing+=(kubernetes-client); fi
fi
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm install only when the lockfile changed since the last successful install.
stamp=node_modules/.slipstream-install
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -x node_modules/.bin/node || ! -f shared/nftables-napi/build/Release/nftables_napi.node || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: npm ci (Node 24 and the nftables addon)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" >"$stamp"
fi
echo "setup: ready ($(node_modules/.bin/node --version), $(nft --version))"
