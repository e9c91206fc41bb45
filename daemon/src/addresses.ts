// This node's own addresses: the destinations that nodePort traffic is addressed to (kube-proxy
// DNATs `<node address>:<nodePort>` to a pod). Listed with `ip -json address show` and followed
// with `ip monitor address`. Chosen: every address but loopback ones and link-local ones
// (169.254.0.0/16, fe80::/10): the addresses kube-proxy answers nodePorts on by default
// (`--nodeport-addresses` unset), less those no client off the node can reach. A DOWN link's
// addresses count too: they stay local (the kernel still delivers to them through other links),
// and a link going DOWN and UP must cost no write.

import { canonicalAddress } from '@slipstream/shared/core/address';
import { isRecord } from '@slipstream/shared/core/record';
import { IpMonitor, ipJson, jsonArray, type WatcherOptions, watching } from './ip-monitor.ts';

/** Parses `ip -json address show`: the node addresses, canonical, unique, sorted. Unknown shapes are skipped. */
export function parseAddresses(output: string): string[] {
  const out = new Set<string>();
  for (const link of jsonArray(output)) {
    if (!isRecord(link)) continue;
    const flags = Array.isArray(link.flags) ? link.flags : [];
    if (flags.includes('LOOPBACK') || link.link_type === 'loopback') continue;
    const infos = Array.isArray(link.addr_info) ? link.addr_info : [];
    for (const info of infos) {
      if (!isRecord(info) || typeof info.local !== 'string' || info.scope === 'link' || info.scope === 'host')
        continue;
      const parsed = canonicalAddress(info.local);
      if (!parsed.ok) continue;
      if (parsed.family === 'ip' && parsed.address.startsWith('169.254.')) continue;
      if (parsed.family === 'ip6' && /^fe[89ab]/.test(parsed.address)) continue;
      out.add(parsed.address);
    }
  }
  return [...out].sort();
}

export function listAddresses(netns?: string): Promise<string[]> {
  return ipJson(netns, ['address', 'show']).then(parseAddresses);
}

/** Follows this node's addresses; `start()` resolves with the first list. */
export class AddressWatcher extends IpMonitor<string[]> {
  constructor(options: WatcherOptions<string[]>) {
    super(watching(options, 'address', listAddresses, (a, b) => a.join(' ') === b.join(' ')));
  }
}
