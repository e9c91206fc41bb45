// After bulk work, the heap is given back at once instead of whenever V8 next looks.
//
// The daemon's large allocations are transient and rare: the first sync, a full recompute and the
// table read back at each resync (a listing of every element, parsed into a second ruleset) leave
// hundreds of MB of garbage at 100,000 Services, which V8 keeps committed until a major collection
// it may not run for minutes. With `--expose-gc` (the DaemonSet passes it) one full collection
// right after such a sync returns those pages; without it this does nothing.

import type { SyncResult } from './reconciler.ts';

/** Whether a sync did the bulk work whose garbage is worth collecting at once. */
export function isBulk(result: Pick<SyncResult, 'readBack' | 'incremental' | 'result'>): boolean {
  return result.result !== 'error' && (result.readBack || !result.incremental);
}

/** One full collection, when the process was started with --expose-gc. */
export function compactHeap(
  gc: (() => void) | null = (globalThis as { gc?: () => void }).gc ?? null,
): boolean {
  if (!gc) return false;
  gc();
  return true;
}
