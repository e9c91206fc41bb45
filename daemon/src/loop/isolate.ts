// When the kernel refuses a transaction, find the Service(s) responsible and commit all the rest.
//
// The refused Change is split by Service: every element operation belongs to the Service that
// owns the element (in the desired ruleset, or in the belief for removals; `(unowned)` for
// elements adopted from an older run). A target state is built for any subset of Services: those
// in the subset as desired, the others as the kernel holds them now (the belief); everything
// that is not an element (table, maps, flowtable, chains) as desired. Each target is committed as
// one transaction with `diff(belief, target)`, so each step is valid on its own:
//
//   1. no Service at all (the structure): refused -> the node itself is the problem, not a Service
//   2. every Service: committed, or split in halves, recursively, down to single Services
//
// A single Service whose part is refused is a culprit; everything else reaches the kernel.
// k culprits among n Services cost O(k log n) transactions.

import { type Change, emptySummary, isEmpty } from '@slipstream/shared/core/change';
import { diff } from '@slipstream/shared/core/diff';
import {
  type Capabilities,
  type Chain,
  type Ruleset,
  thresholdChain,
  thresholdChainName,
  thresholdsOf,
} from '@slipstream/shared/core/ruleset';

export const UNOWNED = '(unowned)';

const CANARY: Change = { ops: [{ op: 'add-table' }], summary: emptySummary() };

export interface Culprit {
  key: string;
  error: unknown;
  /** The elements of that Service the refused transaction held (for the reason). */
  elements: string[];
}

export interface Isolated {
  /** What the kernel holds now. */
  belief: Ruleset;
  culprits: Culprit[];
  /** Transactions committed along the way. */
  commits: number;
  /** Transactions tried (committed or refused). */
  attempts: number;
}

/** The structure was refused with no Service in it: the node cannot be programmed. */
export class StructureRefused extends Error {
  override name = 'StructureRefused';
  constructor(cause: unknown) {
    super('the kernel refused the table structure itself (no Service in the transaction)', { cause });
  }
}

/** Element keys whose state differs between the belief and the desired ruleset, by owning Service. */
export function touchedByService(belief: Ruleset | null, desired: Ruleset): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  const add = (owner: string, key: string) => {
    const list = groups.get(owner);
    if (list) list.push(key);
    else groups.set(owner, [key]);
  };
  const have = belief?.elements ?? new Map();
  for (const [key, want] of desired.elements) {
    const now = have.get(key);
    if (!now || now.threshold !== want.threshold) add(desired.owners.get(key) ?? UNOWNED, key);
  }
  for (const key of have.keys()) {
    if (!desired.elements.has(key)) add(belief?.owners.get(key) ?? UNOWNED, key);
  }
  return groups;
}

/** The state with the elements of `included` Services as desired and every other as in `belief`. */
export function target(
  belief: Ruleset | null,
  desired: Ruleset,
  groups: ReadonlyMap<string, readonly string[]>,
  included: ReadonlySet<string>,
  capabilities: Capabilities,
): Ruleset {
  const elements = new Map(desired.elements);
  const owners = new Map(desired.owners);
  const chains = new Map<string, Chain>(desired.chains);
  for (const [owner, keys] of groups) {
    if (included.has(owner)) continue;
    for (const key of keys) {
      const held = belief?.elements.get(key);
      // An element in a map the target does not have cannot be held: it goes with its map.
      if (held && held.threshold !== null && desired.maps.includes(held.family)) {
        elements.set(key, held);
        const by = belief?.owners.get(key);
        if (by !== undefined) owners.set(key, by);
        else owners.delete(key);
        const name = thresholdChainName(held.threshold);
        if (!chains.has(name)) chains.set(name, thresholdChain(held.threshold, capabilities.flowtable));
      } else {
        elements.delete(key);
        owners.delete(key);
      }
    }
  }
  const out: Ruleset = { ...desired, elements, owners, chains, foreign: [] };
  out.thresholds = thresholdsOf(chains);
  return out;
}

export async function isolate(
  apply: (change: Change) => Promise<void>,
  check: (change: Change) => Promise<void>,
  belief: Ruleset | null,
  desired: Ruleset,
  capabilities: Capabilities,
): Promise<Isolated> {
  const groups = touchedByService(belief, desired);
  let current = belief;
  let commits = 0;
  let attempts = 0;
  const committed = new Set<string>();
  const culprits: Culprit[] = [];

  const tryTarget = async (included: ReadonlySet<string>): Promise<unknown | null> => {
    const next = target(current, desired, groups, included, capabilities);
    const change = diff(current, next);
    if (isEmpty(change)) {
      current = next;
      return null;
    }
    attempts++;
    try {
      await apply(change);
    } catch (error) {
      return error;
    }
    commits++;
    current = next;
    return null;
  };

  // The structure alone. When it needs no change, a dry run of a canary transaction (`add table`
  // of the table that exists) asks whether the kernel takes any transaction at all, so that a
  // kernel refusing everything is the node's failure, not each Service's in turn.
  const structureError = await tryTarget(committed);
  if (structureError !== null) throw new StructureRefused(structureError);
  if (attempts === 0) {
    attempts++;
    try {
      await check(CANARY);
    } catch (error) {
      throw new StructureRefused(error);
    }
  }

  const bisect = async (list: string[]): Promise<void> => {
    const error = await tryTarget(new Set([...committed, ...list]));
    if (error === null) {
      for (const key of list) committed.add(key);
      return;
    }
    if (list.length === 1) {
      culprits.push({ key: list[0]!, error, elements: [...(groups.get(list[0]!) ?? [])].sort() });
      return;
    }
    const half = list.length >> 1;
    await bisect(list.slice(0, half));
    await bisect(list.slice(half));
  };
  await bisect([...groups.keys()].sort());
  return { belief: current!, culprits, commits, attempts };
}
