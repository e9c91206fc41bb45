// The desired state of Slipstream's own nftables table, computed from Services, as typed
// plain data. Pure: no I/O, no nft syntax. Everything that reaches the kernel later is built
// from the typed values here (validated addresses, port numbers, protocol numbers), never from
// annotation text. `diff.ts` turns two Rulesets into typed operations, `nft-text.ts` writes them
// as nft text, and `nft-listing.ts` parses the kernel's listing back into a Ruleset.
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
import { HINT_KEYS } from './contract.ts';
import { type Decision, effectiveDecision } from './decide.ts';
import type { Policy } from './policy.ts';
import { type Namespace, type Service, serviceKey } from './service.ts';

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

/** The canonical identity of an element (its map key, without the verdict). */
export function elementKey(e: Pick<Element, 'family' | 'address' | 'protocol' | 'port'>): string {
  return `${e.family} ${e.address} ${e.protocol} ${e.port}`;
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
  /** Element keys this Service owns in the ruleset (sorted). */
  elements: string[];
  /** ClusterIPs or elements that were skipped (invalid address, owned by another Service). */
  skipped: Skipped[];
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

export interface DesiredInput {
  services: Iterable<Service>;
  namespaces: ReadonlyMap<string, Namespace>;
  devices: Iterable<string>;
  /** This node's own addresses (nodePorts are matched on them); none: nodePorts match nothing. */
  nodeAddresses?: Iterable<string>;
  capabilities: Capabilities;
  policy: Policy;
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

/** What one Service contributes before conflicts are resolved: depends only on the Service, its Namespace and the policy. */
export interface Contribution {
  key: string;
  /** Sort key: `namespace/name`, then uid. */
  order: string;
  entry: Omit<ServiceEntry, 'elements' | 'skipped'>;
  /** Skipped ClusterIPs (invalid addresses). */
  skipped: Skipped[];
  /** The elements the Service asks for, with their keys. */
  candidates: { key: string; element: Element }[];
}

/** How a skipped element is named in `skipped` (e.g. `10.96.0.10 5432/TCP`, `nodePort 30080/TCP`). */
function candidateWhat(e: Element): string {
  const port = `${e.port}/${e.protocol === L4_NUMBER.tcp ? 'TCP' : e.protocol === L4_NUMBER.udp ? 'UDP' : e.protocol}`;
  return e.family === 'np' ? `nodePort ${port}` : `${e.address} ${port}`;
}

type EntryDecision = Contribution['entry']['decision'];

/**
 * Decisions shared by Services of one shape, within one `desiredRuleset` call (one policy, one
 * Namespace per name): 100,000 Services of a few shapes are decided a few times, and share one
 * decision object (and its reason string) in memory.
 */
export type DecisionMemo = Map<string, EntryDecision>;

/**
 * What a decision depends on: everything in the Service but its name, uid and ClusterIPs (and
 * the trace annotation, which only links spans); the Namespace by name (one per call). A
 * Service whose shape cannot be keyed (unexpected values) gets no key and is decided alone.
 */
function decisionShape(service: Service): string | undefined {
  let annotations = service.annotations;
  if (annotations[HINT_KEYS.trace] !== undefined) {
    const { [HINT_KEYS.trace]: _trace, ...rest } = annotations;
    annotations = rest;
  }
  try {
    return JSON.stringify([
      service.namespace,
      service.type,
      service.noClusterIPReason ?? null,
      service.ports,
      annotations,
    ]);
  } catch {
    return undefined;
  }
}

function entryDecision(service: Service, policy: Policy, namespace: Namespace | undefined): EntryDecision {
  const decision = effectiveDecision(service, policy, namespace);
  return {
    offload: decision.offload,
    reason: decision.reason,
    rule: decision.rule,
    policy: decision.policy,
    source: decision.source,
    warnings: decision.warnings,
  };
}

interface Memo {
  namespace: Namespace | undefined;
  policy: Policy;
  contribution: Contribution;
}

/**
 * Memoizes each Service's contribution by object identity (Services and Namespaces are
 * replaced, never mutated, when they change): a sync over 50k Services then recomputes only the
 * Services that changed. Pass the same cache to every `desiredRuleset` call.
 */
export type ContributionCache = WeakMap<Service, Memo>;

export function newContributionCache(): ContributionCache {
  return new WeakMap();
}

/** Why an address cannot carry the Service's traffic for its family, or null. */
function familyMismatch(service: Service, family: Family, address: string, clusterIP = true): string | null {
  if (family === 'ip6' && /^::ffff:[0-9.]+$/.test(address)) {
    return 'an IPv4-mapped IPv6 address: its traffic arrives as IPv4, never to this address';
  }
  // spec.ipFamilies speaks of the ClusterIPs only.
  const families = clusterIP ? service.ipFamilies : undefined;
  const want = family === 'ip' ? 'IPv4' : 'IPv6';
  if (families && families.length > 0 && !families.includes(want)) {
    return `an ${want} address, but spec.ipFamilies is [${families.join(', ')}]`;
  }
  return null;
}

/** The decision, addresses and candidate elements of one Service. Pure. */
export function contribution(
  service: Service,
  policy: Policy,
  namespace: Namespace | undefined,
  decisions?: DecisionMemo,
): Contribution {
  const key = serviceKey(service);
  let decision: EntryDecision | undefined;
  const shape = decisions ? decisionShape(service) : undefined;
  if (shape !== undefined) decision = decisions!.get(shape);
  if (!decision) {
    decision = entryDecision(service, policy, namespace);
    if (shape !== undefined) decisions!.set(shape, decision);
  }
  const entry: Contribution['entry'] = {
    key,
    namespace: service.namespace,
    name: service.name,
    ...(service.uid !== undefined ? { uid: service.uid } : {}),
    decision,
  };
  const trace = service.annotations[HINT_KEYS.trace];
  if (trace !== undefined) entry.trace = trace;
  const out: Contribution = {
    key,
    order: `${key}\n${service.uid ?? ''}`,
    entry,
    skipped: [],
    candidates: [],
  };
  // Addresses are checked whatever the decision, so that bad input is named even when nothing of
  // the Service is offloaded.
  const { vips, skipped } = serviceVips(service);
  out.skipped.push(...skipped);
  if (decision.offload.length === 0) return out;
  for (const { family, address } of vips) {
    for (const port of decision.offload) {
      const protocol = port.protocol === 'TCP' ? L4_NUMBER.tcp : L4_NUMBER.udp;
      // Each element jumps to its own port's threshold chain.
      const element: Element = { family, address, protocol, port: port.port, threshold: port.threshold };
      out.candidates.push({ key: elementKey(element), element });
    }
  }
  // NodePorts: on every address of this node (the node4/node6 sets), keyed by protocol and port.
  for (const port of decision.offload) {
    const nodePort = service.ports.find(
      (p) => p.port === port.port && p.protocol === port.protocol,
    )?.nodePort;
    if (nodePort === undefined) continue;
    const protocol = port.protocol === 'TCP' ? L4_NUMBER.tcp : L4_NUMBER.udp;
    const element: Element = {
      family: 'np',
      address: '',
      protocol,
      port: nodePort,
      threshold: port.threshold,
    };
    out.candidates.push({ key: elementKey(element), element });
  }
  return out;
}

/** The kinds of address traffic reaches a Service by (kube-proxy DNATs each of them). */
export type VipKind = 'clusterIP' | 'externalIP' | 'loadBalancer' | 'nodePort';

export interface Vip {
  kind: Exclude<VipKind, 'nodePort'>;
  family: Family;
  address: string;
}

/**
 * Every address of a Service that this node forwards to it: ClusterIPs (of the families
 * spec.ipFamilies allows), spec.externalIPs and the load balancer's ingress IPs; canonical and
 * unique. What cannot be used is named in `skipped`.
 */
export function serviceVips(service: Service): { vips: Vip[]; skipped: Skipped[] } {
  const vips: Vip[] = [];
  const skipped: Skipped[] = [];
  const lists: [Vip['kind'], string, readonly string[]][] = [
    ['clusterIP', 'ClusterIP', service.clusterIPs],
    ['externalIP', 'externalIP', service.externalIPs ?? []],
    ['loadBalancer', 'load balancer IP', service.loadBalancerIPs ?? []],
  ];
  for (const [kind, label, list] of lists) {
    for (const raw of list) {
      const parsed = canonicalAddress(raw);
      const what = `${label} ${JSON.stringify(raw.slice(0, 64))}`;
      if (!parsed.ok) {
        skipped.push({ what, reason: parsed.reason });
        continue;
      }
      const mismatch = familyMismatch(service, parsed.family, parsed.address, kind === 'clusterIP');
      if (mismatch) {
        skipped.push({ what, reason: mismatch });
        continue;
      }
      if (vips.some((v) => v.address === parsed.address && v.family === parsed.family)) continue;
      vips.push({ kind, family: parsed.family, address: parsed.address });
    }
  }
  return { vips, skipped };
}

/** `contribution`, memoized by Service identity (and the Namespace and policy it was computed with). */
export function cachedContribution(
  service: Service,
  policy: Policy,
  namespace: Namespace | undefined,
  cache?: ContributionCache,
  decisions?: DecisionMemo,
): Contribution {
  const memo = cache?.get(service);
  if (memo && memo.namespace === namespace && memo.policy === policy) return memo.contribution;
  const c = contribution(service, policy, namespace, decisions);
  cache?.set(service, { namespace, policy, contribution: c });
  return c;
}

/** A Service's entry in a ruleset, before its elements are added (an object literal: no spread). */
export function newEntry(c: Contribution): ServiceEntry {
  const e = c.entry;
  const entry: ServiceEntry = {
    key: e.key,
    namespace: e.namespace,
    name: e.name,
    decision: e.decision,
    elements: [],
    skipped: c.skipped.length > 0 ? [...c.skipped] : [],
  };
  if (e.uid !== undefined) entry.uid = e.uid;
  if (e.trace !== undefined) entry.trace = e.trace;
  return entry;
}

/** The start of the `skipped` reason of an element another Service already owns. */
export const CONFLICT_REASON = 'already programmed for Service ';

/**
 * The ruleset Slipstream wants in the kernel. Deterministic: Services are processed in
 * `namespace/name` (then uid) order, so if two Services claim the same ClusterIP, protocol and
 * port (Kubernetes forbids sharing a ClusterIP, but inputs can be stale), the first one owns
 * the element and the other records why it was skipped. Never throws on bad input: an invalid
 * ClusterIP is skipped with a reason in the Service's entry.
 */
export function desiredRuleset(input: DesiredInput, cache?: ContributionCache): Ruleset {
  const { capabilities, policy } = input;
  const contributions: Contribution[] = [];
  const decisions: DecisionMemo = new Map();
  for (const service of input.services) {
    contributions.push(
      cachedContribution(service, policy, input.namespaces.get(service.namespace), cache, decisions),
    );
  }
  return assembleRuleset(contributions, input.devices, capabilities, input.nodeAddresses ?? []);
}

/**
 * The ruleset from the contributions of every Service (sorted here; the input is not changed):
 * deterministic, and conflicts resolved as `desiredRuleset` describes.
 */
export function assembleRuleset(
  contributions: Contribution[],
  devices: Iterable<string>,
  capabilities: Capabilities,
  nodeAddresses: Iterable<string> = [],
): Ruleset {
  const ruleset = emptyRuleset(
    capabilities.flowtable ? [...devices] : null,
    capabilities.flowtableCounter === true,
    nodeAddresses,
  );
  const thresholds = new Set<number>();
  const sorted = [...contributions].sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  for (const c of sorted) {
    // Two objects with one namespace/name (stale input): the first (by uid) wins.
    if (ruleset.services.has(c.key)) continue;
    const entry = newEntry(c);
    ruleset.services.set(c.key, entry);
    for (const { key, element } of c.candidates) {
      const owner = ruleset.owners.get(key);
      if (owner !== undefined) {
        entry.skipped.push({ what: candidateWhat(element), reason: `${CONFLICT_REASON}${owner}` });
        continue;
      }
      ruleset.elements.set(key, element);
      ruleset.owners.set(key, c.key);
      entry.elements.push(key);
      if (element.threshold !== null) thresholds.add(element.threshold);
    }
    entry.elements.sort();
  }

  ruleset.thresholds = [...thresholds].sort((a, b) => a - b);
  for (const t of ruleset.thresholds) {
    const chain = thresholdChain(t, capabilities.flowtable);
    ruleset.chains.set(chain.name, chain);
  }
  return ruleset;
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
