// Slipstream's own nftables table as typed plain data: its objects, their names and keys. Pure: no
// I/O, no nft syntax. `desired-ruleset.ts` computes it from Services (validated addresses, port
// numbers, protocol numbers, never annotation text), `diff.ts` turns two Rulesets into typed
// operations, `nft-text.ts` writes them as nft text, and `nft-listing.ts` parses the kernel's
// listing back into a Ruleset.
//
//   table inet slipstream {
//     flowtable ft { hook ingress priority filter; devices = { <UP non-loopback links> }; counter; }
//     map svc4 { type ipv4_addr . inet_proto . inet_service : verdict; }   # ClusterIPs, external
//     map svc6 { type ipv6_addr . inet_proto . inet_service : verdict; }   # and load balancer IPs
//     map nodeports { type inet_proto . inet_service : verdict; }          # nodePorts
//     set node4 { type ipv4_addr; }   set node6 { type ipv6_addr; }        # this node's addresses
//     chain forward { type filter hook forward priority filter + 10; policy accept;
//       meta l4proto tcp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4
//       meta l4proto tcp ct original ip daddr @node4 ct protocol . ct original proto-dst vmap @nodeports
//       (the same for udp, and for ip6 with @svc6 and @node6) }
//     chain threshold-20 { ct packets > 20 counter flow add @ft }   # one per threshold in use
//   }

import { canonicalAddress, type Family } from './address.ts';
import type { Decision } from './decide.ts';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'slipstream';
export const FLOWTABLE_NAME = 'ft';
export const FORWARD_CHAIN = 'forward';
/** `priority filter + 10`: after the usual filter chains, so their drops still win. */
export const FORWARD_PRIORITY = 10;
/** Flowtable hook priority (`filter` = 0). */
export const FLOWTABLE_PRIORITY = 0;

export type { Family } from './address.ts';
export const FAMILIES: readonly Family[] = ['ip', 'ip6'];
/** The verdict maps elements live in: svc4 and svc6 by address family, nodeports (`np`) by port. */
export type MapId = Family | 'np';
export const MAPS: readonly MapId[] = ['ip', 'ip6', 'np'];
export const MAP_NAMES: Readonly<Record<MapId, string>> = { ip: 'svc4', ip6: 'svc6', np: 'nodeports' };
/** The sets of this node's own addresses, by family (nodePort traffic is addressed to them). */
export const NODE_SET_NAMES: Readonly<Record<Family, string>> = { ip: 'node4', ip6: 'node6' };

export type L4 = 'tcp' | 'udp';
export const L4S: readonly L4[] = ['tcp', 'udp'];
/** IANA protocol numbers: elements carry numbers, so a foreign element (e.g. sctp) is representable. */
export const L4_NUMBER: Readonly<Record<L4, number>> = { tcp: 6, udp: 17 };

export function thresholdChainName(threshold: number): string {
  return `threshold-${threshold}`;
}

/** The threshold of a chain named `threshold-N` (canonical decimal), or null. */
export function parseThresholdChainName(name: string): number | null {
  const m = /^threshold-(0|[1-9][0-9]{0,6})$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** One map element: `address . protocol . port : jump threshold-N` (nodeports: `protocol . port`). */
export interface Element {
  /** The map it lives in: `ip` (svc4), `ip6` (svc6) or `np` (nodeports). */
  family: MapId;
  /** Canonical text form (IPv4 dotted quad; IPv6 compressed lowercase, as inet_ntop prints it); '' for nodeports. */
  address: string;
  /** IANA protocol number: 6 (tcp) or 17 (udp) for elements Slipstream writes. */
  protocol: number;
  port: number;
  /** The `jump threshold-N` target; null for a verdict Slipstream does not write (found in the kernel). */
  threshold: number | null;
}

/**
 * The canonical identity of an element (its map key, without the verdict). Joined, not a
 * template: a template gives a tree of cons strings, and a map key of that shape keeps the tree's
 * root beside the flat copy its hashing makes (~70 bytes more per key).
 */
export function elementKey(e: Pick<Element, 'family' | 'address' | 'protocol' | 'port'>): string {
  return [e.family, e.address, e.protocol, e.port].join(' ');
}

/**
 * The element a connection to (original destination address, protocol, port) hits, in the order
 * the forward chain tries them: the Service maps first (an externalIP may be a node address), then
 * nodeports for this node's own addresses.
 */
export function elementHit(
  ruleset: Pick<Ruleset, 'elements' | 'nodeAddresses'>,
  address: string,
  protocol: number,
  port: number,
): Element | undefined {
  const family: Family = address.includes(':') ? 'ip6' : 'ip';
  return (
    ruleset.elements.get(elementKey({ family, address, protocol, port })) ??
    (ruleset.nodeAddresses[family].includes(address)
      ? ruleset.elements.get(elementKey({ family: 'np', address: '', protocol, port }))
      : undefined)
  );
}

export type RuleSpec =
  /** `meta l4proto P ct original <family> daddr . ct protocol . ct original proto-dst vmap @svcN` */
  | { kind: 'dispatch'; family: Family; protocol: L4 }
  /** `meta l4proto P ct original <family> daddr @nodeN ct protocol . ct original proto-dst vmap @nodeports` */
  | { kind: 'nodeport'; family: Family; protocol: L4 }
  /** `ct packets > N counter [flow add @ft]` (without `flow add` in degraded mode). */
  | { kind: 'threshold'; threshold: number; offload: boolean }
  /** Any other rule found in the kernel; `text` is a canonical rendering of its expressions. */
  | { kind: 'foreign'; text: string };

export function ruleKey(rule: RuleSpec): string {
  switch (rule.kind) {
    case 'dispatch':
      return `dispatch ${rule.family} ${rule.protocol}`;
    case 'nodeport':
      return `nodeport ${rule.family} ${rule.protocol}`;
    case 'threshold':
      return `threshold ${rule.threshold}${rule.offload ? ' offload' : ''}`;
    case 'foreign':
      return `foreign ${rule.text}`;
  }
}

export interface BaseChain {
  type: string;
  hook: string;
  priority: number;
  policy: string;
}

export interface Chain {
  name: string;
  /** Base chain definition, or null for a regular chain. */
  base: BaseChain | null;
  rules: RuleSpec[];
  /** The kernel's handle (chains read back from the kernel; names Slipstream does not write are deleted by it). */
  handle?: number;
}

export function chainsEqual(a: Chain, b: Chain): boolean {
  return baseEqual(a.base, b.base) && rulesEqual(a.rules, b.rules);
}

export function baseEqual(a: BaseChain | null, b: BaseChain | null): boolean {
  if (a === null || b === null) return a === b;
  return a.type === b.type && a.hook === b.hook && a.priority === b.priority && a.policy === b.policy;
}

export function rulesEqual(a: readonly RuleSpec[], b: readonly RuleSpec[]): boolean {
  return a.length === b.length && a.every((rule, i) => ruleKey(rule) === ruleKey(b[i]!));
}

export const FORWARD_BASE: BaseChain = {
  type: 'filter',
  hook: 'forward',
  priority: FORWARD_PRIORITY,
  policy: 'accept',
};

/** Why a ClusterIP or port of a Service did not become an element. */
export interface Skipped {
  what: string;
  reason: string;
}

/** Per-Service bookkeeping: what the Service asked for, what it got, and why. */
export interface ServiceEntry {
  /** `namespace/name` */
  key: string;
  namespace: string;
  name: string;
  uid?: string;
  /** Each offloaded port carries its own threshold (`offload[].threshold`). */
  decision: Pick<Decision, 'offload' | 'reason' | 'rule' | 'policy' | 'source' | 'warnings'>;
  /** Element keys this Service owns in the ruleset (sorted; shared and frozen when empty). */
  elements: readonly string[];
  /** ClusterIPs or elements that were skipped (invalid address, owned by another Service; shared and frozen when none). */
  skipped: readonly Skipped[];
  /** The raw `hints.slipstream.dev/trace` annotation (validated only where it is used). */
  trace?: string;
}

export interface Flowtable {
  name: string;
  /** Hooked devices (sorted, unique). */
  devices: string[];
  /**
   * The `counter` flag: conntrack's packet and byte counters keep counting offloaded connections.
   * null: not known (a kernel listing that does not say).
   */
  counter: boolean | null;
}

/**
 * An object in Slipstream's table that Slipstream does not write, or writes otherwise (a map of
 * its own name with another type, flags or size; a flowtable with another hook): the next sync
 * deletes it, by handle (its name came from the kernel and is never written into nft text), and
 * re-creates what Slipstream wants in the same transaction.
 */
export interface ForeignObject {
  /** The nft object kind (`set`, `map`, `flowtable`, `counter`, `quota`, `ct helper`, ...). */
  kind: string;
  name: string;
  handle: number | null;
  /** Why it is not Slipstream's (for logs and the sync span). */
  why: string;
}

export interface Ruleset {
  family: 'inet';
  table: string;
  /** The flowtable and its devices; null in degraded mode (no flowtable support). */
  flowtable: Flowtable | null;
  /** The verdict maps present (in MAPS order). */
  maps: MapId[];
  /** The node address sets present (ip before ip6). */
  nodeSets: Family[];
  /** This node's addresses in those sets (canonical, sorted). */
  nodeAddresses: Record<Family, string[]>;
  /** Chains by name. */
  chains: Map<string, Chain>;
  /** Elements by `elementKey`. */
  elements: Map<string, Element>;
  /** The thresholds whose chains exist (sorted ascending). */
  thresholds: number[];
  /** Objects in the table that Slipstream does not write, or writes otherwise (found in the kernel); always empty when desired. */
  foreign: ForeignObject[];
  /** Per-Service bookkeeping by `namespace/name`; empty for a ruleset read from the kernel. */
  services: Map<string, ServiceEntry>;
  /** Element key → the key of the Service that owns it; empty for a ruleset read from the kernel. */
  owners: Map<string, string>;
}

export interface Capabilities {
  /** Whether the kernel can create a flowtable (and `flow add` to it). */
  flowtable: boolean;
  /** Whether flowtables take the `counter` flag (conntrack keeps counting offloaded traffic). */
  flowtableCounter?: boolean;
  /** Why not, when it cannot (either). */
  reason?: string;
}

/**
 * Accepts a device name only when it could be a Linux interface name (IFNAMSIZ, no '/', ':' or
 * white space) and can be written as a quoted nft string (no quote, backslash or control
 * character). Other links are left out of the flowtable, with that reason.
 */
export function validDeviceName(name: string): boolean {
  return /^[^\s/:"\\\x00-\x1f\x7f]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

// ---------------------------------------------------------------------------------------------
// The desired ruleset

function dispatchRules(): RuleSpec[] {
  const rules: RuleSpec[] = [];
  for (const family of FAMILIES)
    for (const protocol of L4S) rules.push({ kind: 'dispatch', family, protocol });
  for (const family of FAMILIES)
    for (const protocol of L4S) rules.push({ kind: 'nodeport', family, protocol });
  return rules;
}

/** Node addresses by family, canonical and sorted; what is not an address is left out. */
export function nodeAddressSets(addresses: Iterable<string>): Record<Family, string[]> {
  const out: Record<Family, Set<string>> = { ip: new Set(), ip6: new Set() };
  for (const raw of addresses) {
    const parsed = canonicalAddress(raw);
    if (parsed.ok) out[parsed.family].add(parsed.address);
  }
  return { ip: [...out.ip].sort(), ip6: [...out.ip6].sort() };
}

export function forwardChain(): Chain {
  return { name: FORWARD_CHAIN, base: { ...FORWARD_BASE }, rules: dispatchRules() };
}

export function thresholdChain(threshold: number, offload: boolean): Chain {
  return {
    name: thresholdChainName(threshold),
    base: null,
    rules: [{ kind: 'threshold', threshold, offload }],
  };
}

/** A table with nothing in it: what the kernel holds right after `add table`. */
export function bareTable(): Ruleset {
  return {
    family: 'inet',
    table: TABLE_NAME,
    flowtable: null,
    maps: [],
    nodeSets: [],
    nodeAddresses: { ip: [], ip6: [] },
    chains: new Map(),
    elements: new Map(),
    thresholds: [],
    foreign: [],
    services: new Map(),
    owners: new Map(),
  };
}

/** An empty ruleset skeleton (table, maps, forward chain) with the given flowtable devices. */
export function emptyRuleset(
  flowtableDevices: string[] | null,
  counter = false,
  nodeAddresses: Iterable<string> = [],
): Ruleset {
  return {
    family: 'inet',
    table: TABLE_NAME,
    flowtable: flowtableDevices
      ? { name: FLOWTABLE_NAME, devices: normalizeDevices(flowtableDevices), counter }
      : null,
    maps: [...MAPS],
    nodeSets: [...FAMILIES],
    nodeAddresses: nodeAddressSets(nodeAddresses),
    chains: new Map([[FORWARD_CHAIN, forwardChain()]]),
    elements: new Map(),
    thresholds: [],
    foreign: [],
    services: new Map(),
    owners: new Map(),
  };
}

export function normalizeDevices(devices: Iterable<string>): string[] {
  return [...new Set(devices)].filter(validDeviceName).sort();
}

/** The thresholds of a set of chains, from their names. */
export function thresholdsOf(chains: ReadonlyMap<string, Chain>): number[] {
  const out: number[] = [];
  for (const name of chains.keys()) {
    const t = parseThresholdChainName(name);
    if (t !== null) out.push(t);
  }
  return out.sort((a, b) => a - b);
}
