// The minimal change that turns one Ruleset into another, as an ordered list of typed
// operations. Pure. `nft-text.ts` writes each operation as nft text (the one writer); the
// daemon's MemoryKernel applies the same operations to its in-memory twin. Applying a Change is
// ONE transaction: the order below is what makes every step valid inside it.
//
//   1. add-table (when there is none)
//   2. flush-chain: chains whose rules are rewritten, that are about to be deleted, or whose rules
//      use an object that is deleted and re-created (the forward chain for a map of another size,
//      the threshold chains for a flowtable with another hook)
//   3. flush-map: maps of Slipstream's name but another definition (before they are deleted)
//   4. delete-elements (before adds: an element whose verdict changed is deleted and re-added),
//      delete-set-elements (node addresses no longer this node's)
//   5. delete-map, delete-object (foreign objects, by handle), delete-flowtable (one with another
//      hook, or re-created to evict its flows), delete-flowtable-devices (devices no longer wanted,
//      in place: same flowtable)
//   6. delete-chain: chains no longer used (flushed in 2; their elements are gone by now)
//   7. add-flowtable: created, devices added, or its flags set (each carries the wanted flags)
//   8. add-map, add-set
//   9. add-chain (threshold chains exist before elements jump to them)
//  10. add-elements, add-set-elements
//  11. add-rule: rules of new and flushed chains (after maps and flowtable exist)
//
// Objects are never re-created to change them when the kernel can change them in place: an
// unrelated device leaving the flowtable keeps the flowtable (and every offloaded flow in it).
// The one exception is asked for: `recreateFlowtable` deletes and re-adds the flowtable in the
// transaction, the only way a 6.1 kernel offers to send offloaded flows back to the slow path
// without touching their conntrack entries (see the daemon's loop/evict.ts).

import { type Change, emptySummary, type Op } from './change.ts';
import type { RulesetDelta } from './delta.ts';
import {
  baseEqual,
  type Chain,
  type Element,
  FAMILIES,
  type Family,
  type ForeignObject,
  MAP_NAMES,
  MAPS,
  type MapId,
  NODE_SET_NAMES,
  parseThresholdChainName,
  type Ruleset,
  rulesEqual,
  thresholdChainName,
} from './ruleset.ts';

/** An element with its key (the map key it was found under: not recomputed). */
interface Keyed {
  key: string;
  e: Element;
}

function sortedElements(elements: Keyed[]): Element[] {
  // Keys known (not computed in the comparator): this sorts 100k elements in tens of milliseconds.
  return elements.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).map((x) => x.e);
}

function byFamily(elements: Element[]): Map<MapId, Element[]> {
  const out = new Map<MapId, Element[]>();
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

/** Whether a chain's rules use map `family`'s map. */
function usesMap(chain: Chain, family: MapId): boolean {
  if (family === 'np') return chain.rules.some((r) => r.kind === 'nodeport');
  return chain.rules.some((r) => r.kind === 'dispatch' && r.family === family);
}

/** Whether a chain's rules use the node address set of `family`. */
function usesSet(chain: Chain, family: Family): boolean {
  return chain.rules.some((r) => r.kind === 'nodeport' && r.family === family);
}

function usesFlowtable(chain: Chain): boolean {
  return chain.rules.some((r) => r.kind === 'threshold' && r.offload);
}

/** Object kinds nft text can delete by handle (`delete <kind> inet slipstream handle N`). */
export const DELETABLE_BY_HANDLE: ReadonlySet<string> = new Set([
  'set',
  'map',
  'flowtable',
  'chain',
  'counter',
  'quota',
  'limit',
  'secmark',
  'synproxy',
  'ct helper',
  'ct timeout',
  'ct expectation',
]);

export interface DiffOptions {
  /**
   * Delete the flowtable and add it again (with the wanted devices and flags) in the same
   * transaction, the rules that use it flushed and re-added around it: every offloaded flow
   * leaves it, and a flow whose element stays is offloaded again at its next packet. Ignored
   * when there is no flowtable to re-create.
   */
  recreateFlowtable?: boolean;
}

/**
 * The minimal Change from `current` (null: no table) to `desired`. Empty (`isEmpty`) exactly when
 * the two rulesets describe the same kernel state (bookkeeping is not compared), unless
 * `options.recreateFlowtable` asks for more.
 */
export function diff(current: Ruleset | null, desired: Ruleset, options: DiffOptions = {}): Change {
  const summary = emptySummary();
  const ops: Op[] = [];
  const services = new Set<string>();

  let from: Ruleset | null = current;
  // Foreign objects are deleted by handle; one that cannot be (no handle, or a kind nft text
  // cannot name) leaves only the whole table: rebuilt in the same transaction.
  const foreign = current?.foreign ?? [];
  if (current && foreign.some((f) => f.handle === null || !DELETABLE_BY_HANDLE.has(f.kind))) {
    ops.push({ op: 'delete-table' });
    summary.rebuild = true;
    summary.objectsReplaced = foreign.map((f) => `${f.kind} ${f.name}: ${f.why}`);
    for (const key of current.elements.keys()) {
      const owner = current.owners.get(key);
      if (owner !== undefined) services.add(owner);
    }
    summary.elementsRemoved = current.elements.size;
    from = null;
  }
  if (!from) {
    ops.push({ op: 'add-table' });
    summary.tableCreated = !summary.rebuild;
  }

  const curChains: ReadonlyMap<string, Chain> = from?.chains ?? new Map();
  const curElements: ReadonlyMap<string, Element> = from?.elements ?? new Map();
  const curMaps = new Set(from?.maps ?? []);
  const curFlowtable = from?.flowtable ?? null;
  const curForeign = from ? foreign : [];
  if (from) summary.objectsReplaced = curForeign.map((f) => `${f.kind} ${f.name}: ${f.why}`);

  // Objects of Slipstream's names that are deleted and re-created (another definition).
  const replacedMaps = new Set<MapId>(
    MAPS.filter((f) => curForeign.some((o) => o.kind === 'map' && o.name === MAP_NAMES[f])),
  );
  const replacedSets = new Set<Family>(
    FAMILIES.filter((f) => curForeign.some((o) => o.kind === 'set' && o.name === NODE_SET_NAMES[f])),
  );
  const curSets = new Set(from?.nodeSets ?? []);
  const replacedFlowtable = curForeign.some(
    (o) => o.kind === 'flowtable' && o.name === desired.flowtable?.name,
  );
  const recreate =
    options.recreateFlowtable === true &&
    !replacedFlowtable &&
    curFlowtable !== null &&
    desired.flowtable !== null &&
    curFlowtable.name === desired.flowtable.name;

  // Flowtable devices and flags.
  const wantFt = desired.flowtable;
  let deleteFlowtable = false;
  let removeDevices: string[] = [];
  let addFlowtable: { name: string; devices: string[]; counter: boolean } | null = null;
  if (wantFt) {
    if (!curFlowtable || replacedFlowtable) {
      addFlowtable = { name: wantFt.name, devices: [...wantFt.devices], counter: wantFt.counter === true };
      summary.devicesAdded = [...wantFt.devices];
    } else if (recreate) {
      addFlowtable = { name: wantFt.name, devices: [...wantFt.devices], counter: wantFt.counter === true };
      const had = new Set(curFlowtable.devices);
      const want = new Set(wantFt.devices);
      summary.devicesAdded = wantFt.devices.filter((d) => !had.has(d));
      summary.devicesRemoved = curFlowtable.devices.filter((d) => !want.has(d));
      summary.flowtableRecreated = true;
    } else {
      const have = new Set(curFlowtable.devices);
      const want = new Set(wantFt.devices);
      const added = wantFt.devices.filter((d) => !have.has(d));
      removeDevices = curFlowtable.devices.filter((d) => !want.has(d));
      summary.devicesAdded = added;
      summary.devicesRemoved = removeDevices;
      // Every add sets the flowtable's flags (the kernel replaces them), so it carries them all.
      const counter = wantFt.counter === true;
      if (added.length > 0 || curFlowtable.counter !== counter) {
        addFlowtable = { name: wantFt.name, devices: added, counter };
      }
    }
  } else if (curFlowtable) {
    deleteFlowtable = true;
    summary.devicesRemoved = [...curFlowtable.devices];
  }
  const flowtableGoes = deleteFlowtable || replacedFlowtable || recreate;

  // Chains: new, rewritten, deleted (by name: Slipstream's own names; by handle: any other).
  const addChains: Chain[] = [];
  const rewrite: Chain[] = [];
  const deleteChains: string[] = [];
  const deleteForeignChains: (ForeignObject & { handle: number })[] = [];
  for (const [name, chain] of desired.chains) {
    const now = curChains.get(name);
    if (now && !baseEqual(now.base, chain.base)) {
      // Another type, hook or priority: only deleting it changes that.
      rewrite.push(chain);
      deleteChains.push(name);
      addChains.push(chain);
      summary.objectsReplaced.push(`chain ${name}: another type, hook or priority`);
      continue;
    }
    if (!now) {
      addChains.push(chain);
      continue;
    }
    const uses =
      [...replacedMaps].some((f) => usesMap(now, f)) ||
      [...replacedSets].some((f) => usesSet(now, f)) ||
      (flowtableGoes && usesFlowtable(now));
    if (!rulesEqual(now.rules, chain.rules) || uses) rewrite.push(chain);
  }
  for (const [name, chain] of curChains) {
    if (desired.chains.has(name)) continue;
    if (parseThresholdChainName(name) !== null || name === 'forward') {
      deleteChains.push(name);
    } else if (chain.handle !== undefined) {
      deleteForeignChains.push({ kind: 'chain', name, handle: chain.handle, why: 'not a Slipstream chain' });
    } else {
      deleteChains.push(name);
    }
  }
  addChains.sort((a, b) => chainOrder(a.name, b.name));
  rewrite.sort((a, b) => chainOrder(a.name, b.name));
  deleteChains.sort(chainOrder);

  // Elements. A replaced map loses all its elements (flushed), so every wanted one is added.
  const deletes: Keyed[] = [];
  const adds: Keyed[] = [];
  for (const [key, element] of curElements) {
    if (replacedMaps.has(element.family)) continue;
    const want = desired.elements.get(key);
    if (!want || want.threshold !== element.threshold) {
      deletes.push({ key, e: element });
      const owner = from?.owners.get(key);
      if (owner !== undefined) services.add(owner);
    }
  }
  for (const [key, element] of desired.elements) {
    const have =
      curElements.size === 0 || replacedMaps.has(element.family) ? undefined : curElements.get(key);
    if (!have || have.threshold !== element.threshold) {
      adds.push({ key, e: element });
      const owner = desired.owners.get(key);
      if (owner !== undefined) services.add(owner);
    }
  }

  // 2. flush
  const flushed = new Set<string>();
  for (const name of [...rewrite.map((c) => c.name), ...deleteChains]) {
    if (flushed.has(name) || !curChains.has(name)) continue;
    flushed.add(name);
    ops.push({ op: 'flush-chain', chain: name });
  }
  // 3. flush replaced maps
  for (const family of replacedMaps) ops.push({ op: 'flush-map', family });
  // 4. element deletes, one command per family
  for (const [family, list] of byFamily(sortedElements(deletes))) {
    ops.push({ op: 'delete-elements', family, elements: list });
  }
  // Node addresses no longer this node's (the sets that stay).
  const addressChanges = FAMILIES.map((family) => {
    const want = new Set(desired.nodeSets.includes(family) ? desired.nodeAddresses[family] : []);
    const kept = curSets.has(family) && !replacedSets.has(family);
    const have = new Set(kept ? (from?.nodeAddresses[family] ?? []) : []);
    return {
      family,
      remove: [...have].filter((a) => !want.has(a)),
      add: [...want].filter((a) => !have.has(a)),
    };
  });
  for (const { family, remove, add } of addressChanges) {
    if (remove.length > 0) ops.push({ op: 'delete-set-elements', family, addresses: remove });
    summary.addressesRemoved += remove.length;
    summary.addressesAdded += add.length;
  }
  // 5. objects
  for (const family of replacedMaps) ops.push({ op: 'delete-map', family });
  // Objects of Slipstream's names are deleted by name (libnftables then forgets them before they
  // are added again in the same transaction); any other by handle.
  for (const family of replacedSets) ops.push({ op: 'delete-set', family });
  for (const object of curForeign) {
    if (object.kind === 'map' && MAPS.some((f) => replacedMaps.has(f) && MAP_NAMES[f] === object.name))
      continue;
    if (
      object.kind === 'set' &&
      FAMILIES.some((f) => replacedSets.has(f) && NODE_SET_NAMES[f] === object.name)
    )
      continue;
    if (object.handle !== null)
      ops.push({ op: 'delete-object', object: { ...object, handle: object.handle } });
  }
  if ((deleteFlowtable || recreate) && curFlowtable) {
    ops.push({ op: 'delete-flowtable', name: curFlowtable.name });
  }
  if (removeDevices.length > 0 && curFlowtable) {
    ops.push({ op: 'delete-flowtable-devices', name: curFlowtable.name, devices: removeDevices });
  }
  // 6. chains
  for (const chain of deleteChains) if (curChains.has(chain)) ops.push({ op: 'delete-chain', chain });
  for (const object of deleteForeignChains) ops.push({ op: 'delete-object', object });
  // 7-9. flowtable, maps, chains
  if (addFlowtable) ops.push({ op: 'add-flowtable', ...addFlowtable });
  for (const family of MAPS) {
    if (desired.maps.includes(family) && (!curMaps.has(family) || replacedMaps.has(family))) {
      ops.push({ op: 'add-map', family });
    }
  }
  for (const family of FAMILIES) {
    if (desired.nodeSets.includes(family) && (!curSets.has(family) || replacedSets.has(family))) {
      ops.push({ op: 'add-set', family });
    }
  }
  for (const chain of addChains) ops.push({ op: 'add-chain', chain: chain.name, base: chain.base });
  // 10. element adds
  for (const [family, list] of byFamily(sortedElements(adds))) {
    ops.push({ op: 'add-elements', family, elements: list });
  }
  for (const { family, add } of addressChanges) {
    if (add.length > 0) ops.push({ op: 'add-set-elements', family, addresses: add });
  }
  // 11. rules
  const flowtableName = desired.flowtable?.name ?? null;
  const withRules = new Map<string, Chain>();
  for (const c of [...addChains, ...rewrite]) withRules.set(c.name, c);
  for (const chain of [...withRules.values()].sort((a, b) => chainOrder(a.name, b.name))) {
    for (const rule of chain.rules)
      ops.push({ op: 'add-rule', chain: chain.name, rule, flowtable: flowtableName });
  }

  summary.elementsAdded = adds.length;
  summary.elementsRemoved += deletes.length;
  summary.chainsAdded = addChains.filter((c) => !curChains.has(c.name)).map((c) => c.name);
  summary.chainsRemoved = [
    ...deleteChains.filter((c) => !desired.chains.has(c)),
    ...deleteForeignChains.map((c) => c.name),
  ];
  summary.chainsRewritten = rewrite.filter((c) => curChains.has(c.name)).map((c) => c.name);
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
  for (const [family, list] of byFamily(sortedElements(deletes))) {
    ops.push({ op: 'delete-elements', family, elements: list });
  }
  for (const chain of deleteChains) ops.push({ op: 'delete-chain', chain });
  for (const chain of addChains) ops.push({ op: 'add-chain', chain: chain.name, base: chain.base });
  for (const [family, list] of byFamily(sortedElements(adds))) {
    ops.push({ op: 'add-elements', family, elements: list });
  }
  const flowtableName = desired.flowtable?.name ?? null;
  for (const chain of addChains) {
    for (const rule of chain.rules)
      ops.push({ op: 'add-rule', chain: chain.name, rule, flowtable: flowtableName });
  }

  summary.elementsAdded = adds.length;
  summary.elementsRemoved = deletes.length;
  summary.chainsAdded = addChains.map((c) => c.name);
  summary.chainsRemoved = deleteChains;
  summary.services = [...services].sort();
  return { ops, summary };
}
