// Test support: private network namespaces and the kernel as the nft CLI shows it (independent of
// the daemon's own kernel edge). Tests create their own namespaces and touch no other.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { hasCommand } from './process.ts';

/**
 * Whether this process can make private network namespaces (root and `ip`) and, unless
 * `nft: false`, program them with the nft CLI. Suites that need it are skipped otherwise.
 */
export function canUseNetns(needs: { nft?: boolean } = {}): boolean {
  return (
    process.getuid?.() === 0 &&
    hasCommand('ip', ['-V']) &&
    (needs.nft === false || hasCommand('nft', ['--version']))
  );
}

/** A fresh namespace name: `slipstream-<what>-<random>`. */
export function netnsName(what: string): string {
  return `slipstream-${what}-${randomBytes(4).toString('hex')}`;
}

export function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}

/** `nft -j list table inet slipstream` in `netns`, or null when there is no table. */
export function nftJson(netns: string): string | null {
  try {
    return execFileSync('ip', ['netns', 'exec', netns, 'nft', '-j', 'list', 'table', 'inet', 'slipstream'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }).toString();
  } catch {
    return null;
  }
}

type Elem = [{ concat: (string | number)[] }, { jump?: { target: string }; goto?: { target: string } }];

/** The table's map elements as `svc4 ADDR PROTO PORT -> CHAIN` (sorted), and its chains; null without a table. */
export function kernelState(netns: string): { elements: string[]; chains: string[] } | null {
  const text = nftJson(netns);
  if (text === null) return null;
  const doc = JSON.parse(text) as {
    nftables: { map?: { name: string; elem?: Elem[] }; chain?: { name: string } }[];
  };
  const elements = doc.nftables
    .flatMap((i) =>
      (i.map?.elem ?? []).map(
        (e) => `${i.map?.name} ${e[0].concat.join(' ')} -> ${e[1].jump?.target ?? e[1].goto?.target ?? '?'}`,
      ),
    )
    .sort();
  const chains = doc.nftables.flatMap((i) => (i.chain ? [i.chain.name] : [])).sort();
  return { elements, chains };
}
