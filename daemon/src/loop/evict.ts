// Eviction: when offload ends for a Service port (its element leaves the map because the Service
// was deleted, disabled or opted out with its Namespace, the port removed, the policy changed),
// the connections already in the flowtable would stay there until they close: a pooled database
// connection opened before the change would skip the forward hook for hours. So once a sync has
// removed elements, the connections of those ports still marked [OFFLOAD] in conntrack are sent
// back to the slow path.
//
// What a 6.1 kernel offers (measured in the VM lab, see README): no way to clear one conntrack
// entry's offload (ctnetlink refuses to change IPS_OFFLOAD), no way to remove one flow from a
// software flowtable, and deleting the conntrack entry resets the connection (its NAT state goes
// with it). Deleting the flowtable sends every flow in it back to conntrack, which keeps each
// entry, its state and kube-proxy's DNAT (the backend does not change, nothing is reset). So the
// flowtable is re-created in one transaction (`diff(..., { recreateFlowtable: true })`), and only
// when an eviction is due: the flows of other Services are offloaded again at their next packet
// (their elements stay), losing a few packets to the slow path. Any number of ports, in one step.
//
// The removed ports are collected from every committed Change and checked after the last commit
// of the sync (then nothing can offload them any more: their elements are gone). A failed
// eviction keeps them for the next sync.

import type { Change } from '@slipstream/shared/core/change';
import { diff } from '@slipstream/shared/core/diff';
import { type Capabilities, type Element, elementKey, type Ruleset } from '@slipstream/shared/core/ruleset';
import { flowKey, type OffloadedFlows } from '../conntrack.ts';
import { errorText, type Kernel } from '../kernel.ts';
import type { SyncResult } from './result.ts';
import { endChild, type SyncTrace } from './sync-trace.ts';

export interface Eviction {
  /** Removed ports (element keys) with offloaded connections; every removed port when conntrack was unreadable. */
  ports: string[];
  /** Their offloaded connections (null: conntrack could not be read, so the eviction was not skipped). */
  connections: number | null;
}

/** The ports among `removed` that still have offloaded connections: null when none has. */
export function evictionDue(removed: Iterable<Element>, offloaded: OffloadedFlows | null): Eviction | null {
  const ports: string[] = [];
  let connections = 0;
  for (const e of removed) {
    if (offloaded === null) {
      ports.push(elementKey(e));
      continue;
    }
    const n = offloaded.get(flowKey(e.address, e.protocol, e.port))?.connections ?? 0;
    if (n > 0) {
      ports.push(elementKey(e));
      connections += n;
    }
  }
  if (ports.length === 0) return null;
  return { ports: ports.sort(), connections: offloaded === null ? null : connections };
}

/** The transaction that evicts: the flowtable of `belief` deleted and added again as it is. */
export function evictionChange(belief: Ruleset): Change {
  return diff(belief, belief, { recreateFlowtable: true });
}

/** The elements removed by committed Changes, until they are checked. */
export class RemovedPorts {
  readonly #removed = new Map<string, Element>();

  /** Notes the elements a committed Change deleted. */
  committed(change: Change): void {
    for (const op of change.ops) {
      if (op.op === 'delete-elements') for (const e of op.elements) this.#removed.set(elementKey(e), e);
    }
  }

  /** The noted elements that `belief` does not hold (an element deleted to change its threshold is not removed). */
  pending(belief: Ruleset | null | undefined): Element[] {
    const out: Element[] = [];
    for (const [key, e] of this.#removed) {
      if (belief?.elements.has(key)) this.#removed.delete(key);
      else out.push(e);
    }
    return out;
  }

  get size(): number {
    return this.#removed.size;
  }

  clear(): void {
    this.#removed.clear();
  }
}

/** The loop's eviction step: notes what every commit removed, evicts after the sync's last commit. */
export class Evictor {
  readonly #kernel: Kernel;
  readonly #read: (() => Promise<OffloadedFlows | null>) | undefined;
  readonly #removed = new RemovedPorts();

  /** `read` absent: offloaded connections are never evicted (and conntrack never read). */
  constructor(kernel: Kernel, read?: () => Promise<OffloadedFlows | null>) {
    this.#kernel = kernel;
    this.#read = read;
  }

  committed(change: Change): void {
    if (this.#read) this.#removed.committed(change);
  }

  /**
   * After the sync's commits (`belief`: what the kernel holds now): one conntrack read when ports
   * were removed, one flowtable re-creation when some still have offloaded connections. A refused
   * eviction throws (the sync fails and is retried with backoff); the ports stay noted.
   */
  async afterCommits(
    belief: Ruleset | null | undefined,
    caps: Capabilities,
    trace: SyncTrace,
    result: SyncResult,
  ): Promise<void> {
    if (!this.#read || this.#removed.size === 0) return;
    const removed = this.#removed.pending(belief);
    if (removed.length === 0 || !caps.flowtable || !belief?.flowtable) {
      this.#removed.clear();
      return;
    }
    const readStarted = performance.now();
    const due = evictionDue(removed, await this.#read());
    const readMs = Math.round(performance.now() - readStarted);
    if (!due) {
      this.#removed.clear();
      return;
    }
    const span = trace.child('evict', {
      'slipstream.evict.ports': due.ports.length,
      'slipstream.evict.connections': due.connections ?? -1,
    });
    const commitStarted = performance.now();
    try {
      await this.#kernel.apply(evictionChange(belief));
    } catch (error) {
      endChild(span, error, errorText(error));
      throw error;
    }
    endChild(span);
    this.#removed.clear();
    result.result = 'ok';
    result.change = result.change
      ? `${result.change}; evict: re-create flowtable`
      : 'evict: re-create flowtable';
    result.evicted = {
      ports: due.ports.length,
      connections: due.connections,
      examples: due.ports.slice(0, 5),
      conntrackMs: readMs,
      commitMs: Math.round(performance.now() - commitStarted),
    };
  }
}
