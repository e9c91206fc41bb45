// Incremental updates of a desired ruleset.
//
// A sync that follows a few Service changes need not rebuild the whole desired ruleset: the
// Reconciler keeps it, and applies the contributions of the Services that were removed and
// added (a changed Service is both) with `applyServiceDelta`. The result is the ruleset that
// `desiredRuleset` would compute from the new Services (the property tests check this), as
// long as no two Services compete for one element or one `namespace/name`: the winner of such a
// conflict depends on the order of all Services, so `applyServiceDelta` refuses (returns null)
// and the caller recomputes in full. `isConflictFree` tells whether a full result qualifies.

import { CONFLICT_REASON, type Contribution, entrySkipped, newEntry } from './desired-ruleset.ts';
import {
  type Capabilities,
  type Chain,
  type Element,
  parseThresholdChainName,
  type Ruleset,
  thresholdChain,
  thresholdChainName,
} from './ruleset.ts';

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
    const keys: string[] = [];
    for (const { key, element } of c.candidates) {
      const t = touch(key);
      t.after = element;
      t.afterOwner = c.key;
      count(element.threshold, 1);
      ruleset.elements.set(key, element);
      ruleset.owners.set(key, c.key);
      keys.push(key);
    }
    ruleset.services.set(c.key, newEntry(c, keys, entrySkipped(c)));
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
