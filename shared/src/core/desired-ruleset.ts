// Services -> the desired ruleset: what each Service contributes (its elements, by VIP and
// port, with their thresholds), cached per Service object, then assembled with conflicts resolved
// (the first Service by name keeps an element). Pure: the model and its names are in ruleset.ts.

import { canonicalAddress } from './address.ts';
import { HINT_KEYS } from './contract.ts';
import { effectiveDecision } from './decide.ts';
import type { Policy } from './policy.ts';
import {
  type Capabilities,
  type Element,
  elementKey,
  emptyRuleset,
  type Family,
  L4_NUMBER,
  type Ruleset,
  type ServiceEntry,
  type Skipped,
  thresholdChain,
} from './ruleset.ts';
import { type Namespace, type Service, serviceKey } from './service.ts';

export interface DesiredInput {
  services: Iterable<Service>;
  namespaces: ReadonlyMap<string, Namespace>;
  devices: Iterable<string>;
  /** This node's own addresses (nodePorts are matched on them); none: nodePorts match nothing. */
  nodeAddresses?: Iterable<string>;
  capabilities: Capabilities;
  policy: Policy;
}

/** What one Service contributes before conflicts are resolved: depends only on the Service, its Namespace and the policy. */
export interface Contribution {
  key: string;
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

/**
 * The decision, addresses and candidate elements of one Service. Pure. `key`: its
 * `serviceKey`, when the caller holds that string already (the ruleset then shares it).
 */
export function contribution(
  service: Service,
  policy: Policy,
  namespace: Namespace | undefined,
  decisions?: DecisionMemo,
  key: string = serviceKey(service),
): Contribution {
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
  // Addresses are checked whatever the decision, so that bad input is named even when nothing of
  // the Service is offloaded.
  const { vips, skipped } = serviceVips(service);
  if (decision.offload.length === 0) return { key, entry, skipped, candidates: [] };
  const candidates: Contribution['candidates'] = [];
  for (const { family, address } of vips) {
    for (const port of decision.offload) {
      const protocol = port.protocol === 'TCP' ? L4_NUMBER.tcp : L4_NUMBER.udp;
      // Each element jumps to its own port's threshold chain.
      const element: Element = { family, address, protocol, port: port.port, threshold: port.threshold };
      candidates.push({ key: elementKey(element), element });
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
    candidates.push({ key: elementKey(element), element });
  }
  // At their exact length: grown by push, each list would keep room for 16 more (every
  // contribution is alive until the ruleset is assembled).
  return { key, entry, skipped, candidates: candidates.slice() };
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

/** `skipped` and `elements` of the many entries that have none: one shared, frozen array. */
const NONE: readonly never[] = Object.freeze([]);

/**
 * A Service's entry in a ruleset, with its element keys (sorted here) and what was skipped. One
 * object literal per set of optional fields, and `elements` copied to its exact length: a
 * property added later goes to a separate property array, and an array grown by push keeps room
 * for 16 more keys (each ~100 bytes more per entry, with 100,000 Services).
 */
export function newEntry(c: Contribution, elements: string[], skipped: readonly Skipped[]): ServiceEntry {
  const e = c.entry;
  const keys: readonly string[] =
    elements.length === 0 ? NONE : elements.length === 1 ? [elements[0]!] : elements.sort().slice();
  const { key, namespace, name, decision, uid, trace } = e;
  if (trace === undefined) {
    return uid === undefined
      ? { key, namespace, name, decision, elements: keys, skipped }
      : { key, namespace, name, decision, elements: keys, skipped, uid };
  }
  return uid === undefined
    ? { key, namespace, name, decision, elements: keys, skipped, trace }
    : { key, namespace, name, decision, elements: keys, skipped, uid, trace };
}

/** The skipped ClusterIPs of a contribution, as an entry keeps them. */
export function entrySkipped(c: Contribution): readonly Skipped[] {
  return c.skipped.length > 0 ? [...c.skipped] : NONE;
}

/**
 * Contributions in `namespace/name` then uid order: as the strings `${key}\n${uid}` compare, without
 * building one per Service (100,000 of them, alive through the sort). Keys that are not a prefix of
 * one another compare as those strings do at their first difference; otherwise (a key that
 * another continues) the strings are built.
 */
function byOrder(a: Contribution, b: Contribution): number {
  const x = a.key;
  const y = b.key;
  if (x === y) {
    const u = a.entry.uid ?? '';
    const v = b.entry.uid ?? '';
    return u < v ? -1 : u > v ? 1 : 0;
  }
  if (!x.startsWith(y) && !y.startsWith(x)) return x < y ? -1 : 1;
  const p = `${x}\n${a.entry.uid ?? ''}`;
  const q = `${y}\n${b.entry.uid ?? ''}`;
  return p < q ? -1 : p > q ? 1 : 0;
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
  const sorted = [...contributions].sort(byOrder);
  for (const c of sorted) {
    // Two objects with one namespace/name (stale input): the first (by uid) wins.
    if (ruleset.services.has(c.key)) continue;
    const keys: string[] = [];
    let skipped = entrySkipped(c);
    for (const { key, element } of c.candidates) {
      const owner = ruleset.owners.get(key);
      if (owner !== undefined) {
        const conflict = { what: candidateWhat(element), reason: `${CONFLICT_REASON}${owner}` };
        skipped = [...skipped, conflict];
        continue;
      }
      ruleset.elements.set(key, element);
      ruleset.owners.set(key, c.key);
      keys.push(key);
      if (element.threshold !== null) thresholds.add(element.threshold);
    }
    ruleset.services.set(c.key, newEntry(c, keys, skipped));
  }

  ruleset.thresholds = [...thresholds].sort((a, b) => a - b);
  for (const t of ruleset.thresholds) {
    const chain = thresholdChain(t, capabilities.flowtable);
    ruleset.chains.set(chain.name, chain);
  }
  return ruleset;
}
