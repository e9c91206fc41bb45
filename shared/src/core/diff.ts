// The minimal change that turns one Ruleset into another, as an ordered list of typed
// operations. Pure. `nft-json.ts` turns each operation into one libnftables JSON command; the
// daemon's MemoryKernel applies the same operations to its in-memory twin. Applying a Change
// is ONE transaction: the order below is what makes every step valid inside it.
//
//   1. delete-table (rebuild only), add-table
//   2. flush-chain: chains whose rules are rewritten or that are about to be deleted
//   3. delete-flowtable: no longer wanted, or recreated to drop devices (libnftables JSON cannot
//      remove single devices from a flowtable; the threshold chains that use it were flushed in 2)
//   4. add-flowtable: created, or new devices added to the existing one
//   5. add-map
//   6. add-chain: new chains (threshold chains exist before elements jump to them)
//   7. delete-elements (before adds: an element whose verdict changed is deleted and re-added)
//   8. add-elements
//   9. add-rule: rules of new and flushed chains (after maps and flowtable exist)
//  10. delete-chain: chains no longer used (their elements are gone by now)

import {
  type BaseChain,
  baseEqual,
  type Chain,
  type Element,
  FAMILIES,
  type Family,
  parseThresholdChainName,
  type RuleSpec,
  type Ruleset,
  type RulesetDelta,
  rulesEqual,
  thresholdChainName,
} from './ruleset.ts';

export type Op =
  | { op: 'delete-table' }
  | { op: 'add-table' }
  | { op: 'flush-chain'; chain: string }
  | { op: 'delete-flowtable'; name: string }
  | { op: 'add-flowtable'; name: string; devices: string[] }
  | { op: 'add-map'; family: Family }
  | { op: 'add-chain'; chain: string; base: BaseChain | null }
  | { op: 'delete-elements'; family: Family; elements: Element[] }
  | { op: 'add-elements'; family: Family; elements: Element[] }
  | { op: 'add-rule'; chain: string; rule: RuleSpec; flowtable: string | null }
  | { op: 'delete-chain'; chain: string };

export interface ChangeSummary {
  /** The whole table is deleted and recreated (it held objects Slipstream does not write). */
  rebuild: boolean;
  tableCreated: boolean;
  elementsAdded: number;
  elementsRemoved: number;
  chainsAdded: string[];
  chainsRemoved: string[];
  /** Chains whose rules are rewritten (flushed and re-added). */
  chainsRewritten: string[];
  devicesAdded: string[];
  devicesRemoved: string[];
  /** Keys of the Services whose elements change (from the desired and current bookkeeping). */
  services: string[];
}

export interface Change {
  ops: Op[];
  summary: ChangeSummary;
}

export function isEmpty(change: Change): boolean {
  return change.ops.length === 0;
}

function emptySummary(): ChangeSummary {
  return {
    rebuild: false,
    tableCreated: false,
    elementsAdded: 0,
    elementsRemoved: 0,
    chainsAdded: [],
    chainsRemoved: [],
    chainsRewritten: [],
    devicesAdded: [],
    devicesRemoved: [],
    services: [],
  };
}

/** Why the current table cannot be repaired in place (it is rebuilt instead), or null. */
export function needsRebuild(current: Ruleset, desired: Ruleset): string | null {
  if (current.foreign.length > 0) return `foreign objects: ${current.foreign.slice(0, 3).join('; ')}`;
  if (current.flowtable && desired.flowtable && current.flowtable.name !== desired.flowtable.name) {
    return 'flowtable renamed';
  }
  for (const [name, chain] of desired.chains) {
    const now = current.chains.get(name);
    if (now && !baseEqual(now.base, chain.base)) return `chain ${name} has another type, hook or priority`;
  }
  for (const [name, chain] of current.chains) {
    if (!desired.chains.has(name) && chain.base !== null) return `foreign base chain ${name}`;
  }
  return null;
}

/** An element with its key (the map key it was found under: not recomputed). */
interface Keyed {
  key: string;
  e: Element;
}

function sortedElements(elements: Keyed[]): Element[] {
  // Keys known (not computed in the comparator): this sorts 100k elements in tens of milliseconds.
  return elements.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).map((x) => x.e);
}

function byFamily(elements: Element[]): Map<Family, Element[]> {
  const out = new Map<Family, Element[]>();
  for (const e of elements) {
    const list = out.get(e.family);
    if (list) list.push(e);
    else out.set(e.family, [e]);
  }
  return out;
}

function chainOrder(a: string, b: string): number {
  const ta = parseThresholdChainName(a);
  const tb = parseThresholdChainName(b);
  if (ta !== null && tb !== null) return ta - tb;
  if (ta !== null) return -1;
  if (tb !== null) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The minimal Change from `current` (null: no table) to `desired`. Empty (`isEmpty`) exactly when
 * the two rulesets describe the same kernel state (bookkeeping is not compared).
 */
export function diff(current: Ruleset | null, desired: Ruleset): Change {
  const summary = emptySummary();
  const ops: Op[] = [];
  const services = new Set<string>();

  let from: Ruleset | null = current;
  if (current) {
    const why = needsRebuild(current, desired);
    if (why) {
      ops.push({ op: 'delete-table' });
      summary.rebuild = true;
      for (const key of current.elements.keys()) {
        const owner = current.owners.get(key);
        if (owner !== undefined) services.add(owner);
      }
      summary.elementsRemoved = current.elements.size;
      from = null;
    }
  }
  if (!from) {
    ops.push({ op: 'add-table' });
    summary.tableCreated = !summary.rebuild;
  }

  const curChains: ReadonlyMap<string, Chain> = from?.chains ?? new Map();
  const curElements: ReadonlyMap<string, Element> = from?.elements ?? new Map();
  const curMaps = new Set(from?.maps ?? []);
  const curFlowtable = from?.flowtable ?? null;

  // Flowtable devices.
  const wantFt = desired.flowtable;
  let recreateFlowtable = false;
  let deleteFlowtable = false;
  let addFlowtable: { name: string; devices: string[] } | null = null;
  if (wantFt) {
    if (!curFlowtable) {
      addFlowtable = { name: wantFt.name, devices: [...wantFt.devices] };
      summary.devicesAdded = [...wantFt.devices];
    } else {
      const have = new Set(curFlowtable.devices);
      const want = new Set(wantFt.devices);
      const added = wantFt.devices.filter((d) => !have.has(d));
      const removed = curFlowtable.devices.filter((d) => !want.has(d));
      summary.devicesAdded = added;
      summary.devicesRemoved = removed;
      if (removed.length > 0) {
        recreateFlowtable = true;
        deleteFlowtable = true;
        addFlowtable = { name: wantFt.name, devices: [...wantFt.devices] };
      } else if (added.length > 0) {
        addFlowtable = { name: wantFt.name, devices: added };
      }
    }
  } else if (curFlowtable) {
    deleteFlowtable = true;
    summary.devicesRemoved = [...curFlowtable.devices];
  }

  // Chains: new, rewritten, deleted.
  const addChains: Chain[] = [];
  const rewrite: Chain[] = [];
  const deleteChains: string[] = [];
  for (const [name, chain] of desired.chains) {
    const now = curChains.get(name);
    if (!now) {
      addChains.push(chain);
      continue;
    }
    const usesFlowtable = now.rules.some((r) => r.kind === 'threshold' && r.offload);
    if (!rulesEqual(now.rules, chain.rules) || ((recreateFlowtable || deleteFlowtable) && usesFlowtable)) {
      rewrite.push(chain);
    }
  }
  for (const name of curChains.keys()) if (!desired.chains.has(name)) deleteChains.push(name);
  addChains.sort((a, b) => chainOrder(a.name, b.name));
  rewrite.sort((a, b) => chainOrder(a.name, b.name));
  deleteChains.sort(chainOrder);

  // Elements.
  const deletes: Keyed[] = [];
  const adds: Keyed[] = [];
  for (const [key, element] of curElements) {
    const want = desired.elements.get(key);
    if (!want || want.threshold !== element.threshold) {
      deletes.push({ key, e: element });
      const owner = from?.owners.get(key);
      if (owner !== undefined) services.add(owner);
    }
  }
  for (const [key, element] of desired.elements) {
    const have = curElements.size === 0 ? undefined : curElements.get(key);
    if (!have || have.threshold !== element.threshold) {
      adds.push({ key, e: element });
      const owner = desired.owners.get(key);
      if (owner !== undefined) services.add(owner);
    }
  }

  // 2. flush
  const flush = [...rewrite.map((c) => c.name), ...deleteChains];
  for (const chain of flush) ops.push({ op: 'flush-chain', chain });
  // 3-4. flowtable
  if (deleteFlowtable && curFlowtable) ops.push({ op: 'delete-flowtable', name: curFlowtable.name });
  if (addFlowtable) ops.push({ op: 'add-flowtable', ...addFlowtable });
  // 5. maps
  for (const family of FAMILIES) {
    if (desired.maps.includes(family) && !curMaps.has(family)) ops.push({ op: 'add-map', family });
  }
  // 6. chains
  for (const chain of addChains) ops.push({ op: 'add-chain', chain: chain.name, base: chain.base });
  // 7-8. elements, one command per family
  for (const [family, list] of byFamily(sortedElements(deletes))) {
    ops.push({ op: 'delete-elements', family, elements: list });
  }
  for (const [family, list] of byFamily(sortedElements(adds))) {
    ops.push({ op: 'add-elements', family, elements: list });
  }
  // 9. rules
  const flowtableName = desired.flowtable?.name ?? null;
  for (const chain of [...addChains, ...rewrite].sort((a, b) => chainOrder(a.name, b.name))) {
    for (const rule of chain.rules)
      ops.push({ op: 'add-rule', chain: chain.name, rule, flowtable: flowtableName });
  }
  // 10. delete chains
  for (const chain of deleteChains) ops.push({ op: 'delete-chain', chain });

  summary.elementsAdded = adds.length;
  summary.elementsRemoved += deletes.length;
  summary.chainsAdded = addChains.map((c) => c.name);
  summary.chainsRemoved = deleteChains;
  summary.chainsRewritten = rewrite.map((c) => c.name);
  summary.services = [...services].sort();
  return { ops, summary };
}

/**
 * The Change from the ruleset before `applyServiceDelta` to `desired` (the same ruleset after
 * it): equal to `diff(before, desired)`, computed from the touched keys only. Only element and
 * threshold-chain operations can arise (the table, maps and flowtable are not touched).
 */
export function diffDelta(delta: RulesetDelta, desired: Ruleset): Change {
  const summary = emptySummary();
  const ops: Op[] = [];
  const services = new Set<string>();
  const deletes: Keyed[] = [];
  const adds: Keyed[] = [];
  for (const [key, t] of delta.elements) {
    if (t.before && t.after && t.before.threshold === t.after.threshold) continue;
    if (t.before) {
      deletes.push({ key, e: t.before });
      if (t.beforeOwner !== undefined) services.add(t.beforeOwner);
    }
    if (t.after) {
      adds.push({ key, e: t.after });
      if (t.afterOwner !== undefined) services.add(t.afterOwner);
    }
  }
  const addChains = delta.thresholdsAdded.map((t) => desired.chains.get(thresholdChainName(t))!);
  const deleteChains = delta.thresholdsRemoved.map(thresholdChainName);
  for (const chain of deleteChains) ops.push({ op: 'flush-chain', chain });
  for (const chain of addChains) ops.push({ op: 'add-chain', chain: chain.name, base: chain.base });
  for (const [family, list] of byFamily(sortedElements(deletes))) {
    ops.push({ op: 'delete-elements', family, elements: list });
  }
  for (const [family, list] of byFamily(sortedElements(adds))) {
    ops.push({ op: 'add-elements', family, elements: list });
  }
  const flowtableName = desired.flowtable?.name ?? null;
  for (const chain of addChains) {
    for (const rule of chain.rules)
      ops.push({ op: 'add-rule', chain: chain.name, rule, flowtable: flowtableName });
  }
  for (const chain of deleteChains) ops.push({ op: 'delete-chain', chain });

  summary.elementsAdded = adds.length;
  summary.elementsRemoved = deletes.length;
  summary.chainsAdded = addChains.map((c) => c.name);
  summary.chainsRemoved = deleteChains;
  summary.services = [...services].sort();
  return { ops, summary };
}
