// What one sync did: the record logged, put on the sync span, served by /healthz and /status.

import type { NftErrorClass } from 'nftables-napi/errors';
import type { Trigger } from './scheduler.ts';

export type SyncOutcome = 'ok' | 'error' | 'noop';

export interface SyncResult {
  /** The main trigger (startup > drift > resync > the rest); `triggers` has them all. */
  trigger: Trigger;
  triggers: Trigger[];
  result: SyncOutcome;
  /** No flowtable support (or no counter flag): what is left out is in `degradedReason`. */
  degraded: boolean;
  degradedReason?: string;
  services: number;
  /** Elements in the desired ruleset. */
  elements: number;
  elementsAdded: number;
  elementsRemoved: number;
  /** Chains in the desired ruleset (the base chain and one per threshold in use). */
  chains: number;
  /** Kernel transactions committed by this sync. */
  writes: number;
  /** Whether the kernel table was read back (start-up, drift, resync, after a refused transaction). */
  readBack: boolean;
  /** The desired ruleset was patched with only the changed Services (a partial sync); false: computed in full. */
  incremental: boolean;
  /** The read-back found the kernel different from the belief (someone else changed the table). */
  drift: boolean;
  /** What differed, in short (`-120 elements; replace map svc4: size 3`). */
  driftDetail?: string;
  /** A refused transaction was retried with fresh links and a fresh read-back. */
  retried: boolean;
  /** Services kept out of the kernel after this sync. */
  quarantined: number;
  /** Services quarantined by this sync (news: logged once). */
  quarantinedNow?: string[];
  /** Services that reached the kernel again after being quarantined. */
  released?: string[];
  /** The kernel confirmed what was committed (its change events match the Change); null: not checked. */
  verified?: boolean | null;
  /** What the sync changed, in short. */
  change?: string;
  /**
   * Offload ended for ports that still had offloaded connections: the flowtable was re-created
   * (loop/evict.ts). `connections` null: conntrack could not be read, so it was not skipped. What it
   * cost: the conntrack read and the re-creating transaction (ms).
   */
  evicted?: {
    ports: number;
    connections: number | null;
    examples: string[];
    conntrackMs: number;
    commitMs: number;
  };
  /** Inputs not yet received (nothing is written until every source has reported once). */
  waitingFor?: string[];
  error?: string;
  errorClass?: NftErrorClass;
  /** When the next retry runs (ms from now) after an error. */
  retryInMs?: number;
  durationMs: number;
}

const ORDER: Trigger[] = [
  'startup',
  'drift',
  'resync',
  'retry',
  'policy',
  'namespace',
  'link',
  'address',
  'service',
];

export function mainTrigger(triggers: ReadonlySet<Trigger>): Trigger {
  return ORDER.find((t) => triggers.has(t)) ?? 'resync';
}

export function emptyResult(triggers: ReadonlySet<Trigger>): SyncResult {
  return {
    trigger: mainTrigger(triggers),
    triggers: [...triggers],
    result: 'noop',
    degraded: false,
    services: 0,
    elements: 0,
    elementsAdded: 0,
    elementsRemoved: 0,
    chains: 0,
    writes: 0,
    readBack: false,
    incremental: false,
    drift: false,
    retried: false,
    quarantined: 0,
    durationMs: 0,
  };
}
