// A change to Slipstream's table: the typed operations of one transaction (in the order diff.ts
// explains) and their summary for logs, spans and metrics. Pure data: `nft-text.ts` writes the
// operations, the MemoryKernel applies them, `diff.ts` computes them.

import type { BaseChain, Element, Family, ForeignObject, MapId, RuleSpec } from './ruleset.ts';

export type Op =
  | { op: 'add-table' }
  | { op: 'delete-table' }
  | { op: 'flush-chain'; chain: string }
  | { op: 'flush-map'; family: MapId }
  | { op: 'delete-elements'; family: MapId; elements: Element[] }
  | { op: 'delete-set-elements'; family: Family; addresses: string[] }
  | { op: 'delete-map'; family: MapId }
  | { op: 'delete-set'; family: Family }
  | { op: 'delete-object'; object: ForeignObject & { handle: number } }
  | { op: 'delete-flowtable'; name: string }
  | { op: 'delete-flowtable-devices'; name: string; devices: string[] }
  | { op: 'delete-chain'; chain: string }
  | { op: 'add-flowtable'; name: string; devices: string[]; counter: boolean }
  | { op: 'add-map'; family: MapId }
  | { op: 'add-set'; family: Family }
  | { op: 'add-chain'; chain: string; base: BaseChain | null }
  | { op: 'add-elements'; family: MapId; elements: Element[] }
  | { op: 'add-set-elements'; family: Family; addresses: string[] }
  | { op: 'add-rule'; chain: string; rule: RuleSpec; flowtable: string | null };

export interface ChangeSummary {
  tableCreated: boolean;
  /** The table is deleted and re-created: it held an object that cannot be deleted by itself. */
  rebuild: boolean;
  elementsAdded: number;
  elementsRemoved: number;
  chainsAdded: string[];
  chainsRemoved: string[];
  /** Chains whose rules are rewritten (flushed and re-added). */
  chainsRewritten: string[];
  devicesAdded: string[];
  devicesRemoved: string[];
  /** Node addresses added to and removed from the node address sets. */
  addressesAdded: number;
  addressesRemoved: number;
  /** Objects deleted because they are not as Slipstream writes them (`map svc4: size 3`). */
  objectsReplaced: string[];
  /** The flowtable is deleted and re-added as it was (`recreateFlowtable`): its flows leave it. */
  flowtableRecreated?: boolean;
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

/** A summary of no change. */
export function emptySummary(): ChangeSummary {
  return {
    tableCreated: false,
    rebuild: false,
    elementsAdded: 0,
    elementsRemoved: 0,
    chainsAdded: [],
    chainsRemoved: [],
    chainsRewritten: [],
    devicesAdded: [],
    devicesRemoved: [],
    addressesAdded: 0,
    addressesRemoved: 0,
    objectsReplaced: [],
    services: [],
  };
}

/** A short description of a Change for logs and spans: counts, not contents. */
export function describeChange(change: Change): string {
  const s = change.summary;
  const parts: string[] = [];
  if (s.rebuild) parts.push('rebuild table');
  if (s.tableCreated) parts.push('create table');
  if (s.objectsReplaced.length) parts.push(`replace ${s.objectsReplaced.join('; ')}`);
  if (s.flowtableRecreated) parts.push('re-create flowtable');
  if (s.elementsAdded) parts.push(`+${s.elementsAdded} elements`);
  if (s.elementsRemoved) parts.push(`-${s.elementsRemoved} elements`);
  if (s.chainsAdded.length) parts.push(`+chains ${s.chainsAdded.join(',')}`);
  if (s.chainsRemoved.length) parts.push(`-chains ${s.chainsRemoved.join(',')}`);
  if (s.chainsRewritten.length) parts.push(`rewrite ${s.chainsRewritten.join(',')}`);
  if (s.devicesAdded.length) parts.push(`+devices ${s.devicesAdded.join(',')}`);
  if (s.devicesRemoved.length) parts.push(`-devices ${s.devicesRemoved.join(',')}`);
  if (s.addressesAdded) parts.push(`+${s.addressesAdded} node addresses`);
  if (s.addressesRemoved) parts.push(`-${s.addressesRemoved} node addresses`);
  return parts.join('; ') || 'no change';
}
