// The desired state of Slipstream's own nftables table, computed from Services, as typed
// plain data. Pure: no I/O, no nft syntax. Everything that reaches the kernel later is built
// from the typed values here (validated addresses, port numbers, protocol numbers), never from
// annotation text. `nft-json.ts` turns a Ruleset (or a Change from `diff.ts`) into libnftables
// JSON and parses the kernel's listing back into a Ruleset.
//
//   table inet slipstream {
//     flowtable ft { hook ingress priority filter; devices = { <UP non-loopback links> }; }
//     map svc4 { type ipv4_addr . inet_proto . inet_service : verdict; }
//     map svc6 { type ipv6_addr . inet_proto . inet_service : verdict; }
//     chain forward { type filter hook forward priority filter + 10; policy accept;
//       meta l4proto tcp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4
//       (the same for udp, and for ip6 with @svc6) }
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
export const MAP_NAMES: Readonly<Record<Family, string>> = { ip: 'svc4', ip6: 'svc6' };

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

/** One map element: `address . protocol . port : jump threshold-N`. */
export interface Element {
  family: Family;
  /** Canonical text form (IPv4 dotted quad; IPv6 compressed lowercase, as inet_ntop prints it). */
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

export type RuleSpec =
  /** `meta l4proto P ct original <family> daddr . ct protocol . ct original proto-dst vmap @svcN` */
  | { kind: 'dispatch'; family: Family; protocol: L4 }
  /** `ct packets > N counter [flow add @ft]` (without `flow add` in degraded mode). */
  | { kind: 'threshold'; threshold: number; offload: boolean }
  /** Any other rule found in the kernel; `text` is a canonical rendering of its expressions. */
  | { kind: 'foreign'; text: string };

export function ruleKey(rule: RuleSpec): string {
  switch (rule.kind) {
    case 'dispatch':
      return `dispatch ${rule.family} ${rule.protocol}`;
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
  decision: Pick<Decision, 'offload' | 'threshold' | 'reason' | 'rule' | 'policy' | 'source'>;
  /** Element keys this Service owns in the ruleset (sorted). */
  elements: string[];
  /** ClusterIPs or elements that were skipped (invalid address, owned by another Service). */
  skipped: Skipped[];
  /** The raw `hints.slipstream.dev/trace` annotation (validated only where it is used). */
  trace?: string;
}

export interface Ruleset {
  family: 'inet';
  table: string;
  /** The flowtable and its devices (sorted, unique); null in degraded mode (no flowtable support). */
  flowtable: { name: string; devices: string[] } | null;
  /** The verdict maps present (sorted: ip before ip6). */
  maps: Family[];
  /** Chains by name. */
  chains: Map<string, Chain>;
  /** Elements by `elementKey`. */
  elements: Map<string, Element>;
  /** The thresholds whose chains exist (sorted ascending). */
  thresholds: number[];
  /** Objects in the table that Slipstream does not write (found in the kernel); always empty when desired. */
  foreign: string[];
  /** Per-Service bookkeeping by `namespace/name`; empty for a ruleset read from the kernel. */
  services: Map<string, ServiceEntry>;
  /** Element key → the key of the Service that owns it; empty for a ruleset read from the kernel. */
  owners: Map<string, string>;
}

export interface Capabilities {
  /** Whether the kernel can create a flowtable (and `flow add` to it). */
  flowtable: boolean;
  /** Why not, when it cannot. */
  reason?: string;
}

export interface DesiredInput {
  services: Iterable<Service>;
  namespaces: ReadonlyMap<string, Namespace>;
  devices: Iterable<string>;
  capabilities: Capabilities;
  policy: Policy;
}

/** Accepts a device name only when it could be a Linux interface name (IFNAMSIZ, no '/', ':' or space). */
export function validDeviceName(name: string): boolean {
  return /^[^\s/:]{1,15}$/.test(name) && name !== '.' && name !== '..';
}

// ---------------------------------------------------------------------------------------------
// The desired ruleset

function dispatchRules(): RuleSpec[] {
  const rules: RuleSpec[] = [];
  for (const family of FAMILIES)
    for (const protocol of L4S) rules.push({ kind: 'dispatch', family, protocol });
  return rules;
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

/** An empty ruleset skeleton (table, maps, forward chain) with the given flowtable devices. */
/** A table with nothing in it: what the kernel holds right after `add table`. */
export function bareTable(): Ruleset {
  return {
    family: 'inet',
    table: TABLE_NAME,
    flowtable: null,
    maps: [],
    chains: new Map(),
    elements: new Map(),
    thresholds: [],
    foreign: [],
    services: new Map(),
    owners: new Map(),
  };
}

export function emptyRuleset(flowtableDevices: string[] | null): Ruleset {
  return {
    family: 'inet',
    table: TABLE_NAME,
    flowtable: flowtableDevices
      ? { name: FLOWTABLE_NAME, devices: normalizeDevices(flowtableDevices) }
      : null,
    maps: [...FAMILIES],
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

/** How a skipped element is named in `skipped` (e.g. `10.96.0.10 5432/TCP`). */
function candidateWhat(e: Element): string {
  return `${e.address} ${e.port}/${e.protocol === L4_NUMBER.tcp ? 'TCP' : e.protocol === L4_NUMBER.udp ? 'UDP' : e.protocol}`;
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
    threshold: decision.threshold,
    reason: decision.reason,
    rule: decision.rule,
    policy: decision.policy,
    source: decision.source,
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
  if (decision.offload.length === 0 || decision.threshold === null) return out;
  const threshold = decision.threshold;

  const addresses: { family: Family; address: string }[] = [];
  for (const raw of service.clusterIPs) {
    const parsed = canonicalAddress(raw);
    if (!parsed.ok) {
      out.skipped.push({ what: `ClusterIP ${JSON.stringify(raw.slice(0, 64))}`, reason: parsed.reason });
      continue;
    }
    if (addresses.some((a) => a.address === parsed.address && a.family === parsed.family)) continue;
    addresses.push({ family: parsed.family, address: parsed.address });
  }
  for (const { family, address } of addresses) {
    for (const port of decision.offload) {
      const protocol = port.protocol === 'TCP' ? L4_NUMBER.tcp : L4_NUMBER.udp;
      const element: Element = { family, address, protocol, port: port.port, threshold };
      out.candidates.push({ key: elementKey(element), element });
    }
  }
  return out;
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
function newEntry(c: Contribution): ServiceEntry {
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
const CONFLICT_REASON = 'already programmed for Service ';

/**
 * The ruleset Slipstream wants in the kernel. Deterministic: Services are processed in
 * `namespace/name` (then uid) order, so if two Services claim the same ClusterIP, protocol and
 * port (Kubernetes forbids sharing a ClusterIP, but inputs can be stale), the first one owns
 * the element and the other records why it was skipped. Never throws on bad input: an invalid
 * ClusterIP is skipped with a reason in the Service's entry.
 */
export function desiredRuleset(input: DesiredInput, cache?: ContributionCache): Ruleset {
  const { capabilities, policy } = input;
  const ruleset = emptyRuleset(capabilities.flowtable ? [...input.devices] : null);
  const thresholds = new Set<number>();
  const contributions: Contribution[] = [];
  const decisions: DecisionMemo = new Map();
  for (const service of input.services) {
    contributions.push(
      cachedContribution(service, policy, input.namespaces.get(service.namespace), cache, decisions),
    );
  }
  contributions.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));

  for (const c of contributions) {
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

/** Elements grouped by family, in key order (deterministic output for serialization). */
export function elementsByFamily(elements: Iterable<Element>): Record<Family, Element[]> {
  const out: Record<Family, Element[]> = { ip: [], ip6: [] };
  for (const e of elements) out[e.family].push(e);
  for (const f of FAMILIES) out[f].sort((a, b) => compareKeys(elementKey(a), elementKey(b)));
  return out;
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Incremental updates
//
// A sync that follows a few Service changes need not rebuild the whole desired ruleset: the
// Reconciler keeps it, and applies the contributions of the Services that were removed and
// added (a changed Service is both) with `applyServiceDelta`. The result is the ruleset that
// `desiredRuleset` would compute from the new Services (the property tests check this), as
// long as no two Services compete for one element or one `namespace/name`: the winner of such a
// conflict depends on the order of all Services, so `applyServiceDelta` refuses (returns null)
// and the caller recomputes in full. `isConflictFree` tells whether a full result qualifies.

/**
 * Whether `desiredRuleset` resolved no conflict: `serviceCount` distinct Service objects gave
 * as many entries (no shared `namespace/name`), and no Service was denied an element that
 * another Service owns.
 */
export function isConflictFree(ruleset: Ruleset, serviceCount: number): boolean {
  if (ruleset.services.size !== serviceCount) return false;
  for (const entry of ruleset.services.values()) {
    for (const s of entry.skipped) if (s.reason.startsWith(CONFLICT_REASON)) return false;
  }
  return true;
}

/** Elements per threshold: the reference counts that decide whether a threshold chain exists. */
export type ThresholdRefs = Map<number, number>;

export function thresholdRefs(ruleset: Ruleset): ThresholdRefs {
  const refs: ThresholdRefs = new Map();
  for (const e of ruleset.elements.values()) {
    if (e.threshold !== null) refs.set(e.threshold, (refs.get(e.threshold) ?? 0) + 1);
  }
  return refs;
}

/** One element touched by `applyServiceDelta`: its value and owner before and after. */
export interface TouchedElement {
  before: Element | undefined;
  beforeOwner: string | undefined;
  after: Element | undefined;
  afterOwner: string | undefined;
}

/** What `applyServiceDelta` changed. */
export interface RulesetDelta {
  /** Every element key a removed or added Service had or asked for (unchanged ones included). */
  elements: Map<string, TouchedElement>;
  /** Threshold chains that came into use (ascending). */
  thresholdsAdded: number[];
  /** Threshold chains no longer used (ascending). */
  thresholdsRemoved: number[];
}

/**
 * Applies per-Service changes to a conflict-free `ruleset` IN PLACE (with `refs`, its
 * `thresholdRefs`): the entries of the Services keyed `removed` go, with their elements; the
 * `added` contributions come in, with their elements; threshold chains appear when first used
 * and go when last used. Returns what changed, or null — leaving `ruleset` and `refs` untouched
 * — when the result would hold a conflict (see above) or `removed` names an unknown Service.
 */
export function applyServiceDelta(
  ruleset: Ruleset,
  refs: ThresholdRefs,
  removed: readonly string[],
  added: readonly Contribution[],
  capabilities: Capabilities,
): RulesetDelta | null {
  // Check first, mutate after: a refusal leaves everything as it was.
  const going = new Set<string>();
  for (const key of removed) {
    if (going.has(key) || !ruleset.services.has(key)) return null;
    going.add(key);
  }
  const coming = new Set<string>();
  const claimed = new Set<string>();
  for (const c of added) {
    if (coming.has(c.key) || (ruleset.services.has(c.key) && !going.has(c.key))) return null;
    coming.add(c.key);
    for (const { key } of c.candidates) {
      if (claimed.has(key)) return null;
      claimed.add(key);
      const owner = ruleset.owners.get(key);
      if (owner !== undefined && !going.has(owner)) return null;
    }
  }

  const touched = new Map<string, TouchedElement>();
  const touch = (key: string): TouchedElement => {
    let t = touched.get(key);
    if (!t) {
      const before = ruleset.elements.get(key);
      const owner = ruleset.owners.get(key);
      t = { before, beforeOwner: owner, after: before, afterOwner: owner };
      touched.set(key, t);
    }
    return t;
  };
  const changedThresholds = new Set<number>();
  const count = (threshold: number | null, by: number) => {
    if (threshold === null) return;
    refs.set(threshold, (refs.get(threshold) ?? 0) + by);
    changedThresholds.add(threshold);
  };

  for (const key of removed) {
    const entry = ruleset.services.get(key)!;
    for (const ek of entry.elements) {
      const t = touch(ek);
      count(t.after?.threshold ?? null, -1);
      t.after = undefined;
      t.afterOwner = undefined;
      ruleset.elements.delete(ek);
      ruleset.owners.delete(ek);
    }
    ruleset.services.delete(key);
  }
  for (const c of added) {
    const entry = newEntry(c);
    ruleset.services.set(c.key, entry);
    for (const { key, element } of c.candidates) {
      const t = touch(key);
      t.after = element;
      t.afterOwner = c.key;
      count(element.threshold, 1);
      ruleset.elements.set(key, element);
      ruleset.owners.set(key, c.key);
      entry.elements.push(key);
    }
    entry.elements.sort();
  }

  const thresholdsAdded: number[] = [];
  const thresholdsRemoved: number[] = [];
  const inUse = new Set(ruleset.thresholds);
  for (const t of changedThresholds) {
    const n = refs.get(t) ?? 0;
    if (n <= 0) {
      refs.delete(t);
      if (inUse.has(t)) thresholdsRemoved.push(t);
    } else if (!inUse.has(t)) {
      thresholdsAdded.push(t);
    }
  }
  if (thresholdsAdded.length > 0 || thresholdsRemoved.length > 0) {
    thresholdsAdded.sort((a, b) => a - b);
    thresholdsRemoved.sort((a, b) => a - b);
    ruleset.thresholds = [...refs.keys()].sort((a, b) => a - b);
    // Rebuilt in the order `desiredRuleset` uses: the forward chain, then thresholds ascending.
    const chains = new Map<string, Chain>();
    for (const [name, chain] of ruleset.chains)
      if (parseThresholdChainName(name) === null) chains.set(name, chain);
    for (const t of ruleset.thresholds) {
      const name = thresholdChainName(t);
      chains.set(name, ruleset.chains.get(name) ?? thresholdChain(t, capabilities.flowtable));
    }
    ruleset.chains = chains;
  }
  return { elements: touched, thresholdsAdded, thresholdsRemoved };
}
