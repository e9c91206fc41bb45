#!/usr/bin/env bash
# Installs the Debian 12 packages the kernel VM lab (test/kernel/) needs, only those that are missing.
# Idempotent: when everything is present it changes nothing and does not touch the network.
#   scripts/vmlab-setup.sh           install what is missing (as root)
#   scripts/vmlab-setup.sh --check   only report; exit 1 if something is missing
set -euo pipefail

# Package → why the VM lab needs it.
packages=(
  linux-image-amd64 # the guest kernel (has nf_flow_table, unlike the host's) and its modules
  qemu-system-x86   # boots it (TCG, no KVM needed)
  busybox-static    # the initramfs userland
  xz-utils          # unpacks the ELF vmlinux from the XZ-compressed bzImage
  kmod              # modinfo finds the virtio/9p modules; modprobe inside the VM
  nftables          # nft, run inside the VM from the host root
  iproute2          # ip netns / veth topology inside the VM
  iperf3            # long-lived flows to offload
  conntrack         # conntrack -L shows [OFFLOAD]
)

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "vmlab-setup: all packages present"
  exit 0
fi
if [[ ${1:-} == --check ]]; then
  echo "vmlab-setup: missing packages: ${missing[*]}" >&2
  exit 1
fi
if ((EUID != 0)); then
  echo "vmlab-setup: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "vmlab-setup: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for p in "${missing[@]}"; do
  installed "$p" || {
    echo "vmlab-setup: $p did not install" >&2
    exit 1
  }
done
echo "vmlab-setup: done"
