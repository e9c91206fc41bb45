// Where the daemon's Services and Namespaces come from. Two implementations: manifests in a
// directory (embedded mode, files.ts) and the Kubernetes API server (kubernetes.ts). Both keep
// only the typed Service/Namespace that `readService`/`readNamespace` return, never the raw
// objects, and hand out a snapshot that is cached until the next change.

import type { Logger } from '@slipstream/shared/adapters/log';
import type { Namespace, Service } from '@slipstream/shared/core/service';

export type Trigger = 'service' | 'namespace';

/**
 * What changed in a source. `service` is set when exactly one Service changed (an informer's
 * add/update/delete): the daemon hands that one object to the loop, so an event costs O(1) however
 * many Services there are. Without it (a relist, a manifest file re-read, a Namespace) the
 * snapshot is to be taken again.
 */
export interface SourceChange {
  trigger: Trigger;
  service?: {
    namespace: string;
    name: string;
    /** The Service as read now; null: deleted, or no longer readable (it is then in `rejected`). */
    value: Service | null;
  };
}

export interface Rejected {
  /** `namespace/name` of the object (files mode adds the file it came from). */
  ref: string;
  error: string;
}

export interface Snapshot {
  /**
   * Every readable Service. The array and the objects in it are shared with the source and with
   * earlier snapshots: treat them as read-only. A Service that changes is replaced, never mutated.
   */
  services: Service[];
  namespaces: Map<string, Namespace>;
  /** Services that `readService` refused (they are not in `services`). */
  rejected: Rejected[];
}

export interface ServiceSource {
  /** Resolves after the initial full list is loaded (Services and Namespaces). */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Cheap: the same arrays and map are returned until something changes. */
  snapshot(): Snapshot;
  /** Called after any change (synchronously, possibly many times in a row); the reconciler coalesces. */
  onChange(listener: (change: SourceChange) => void): void;
  /** True once the initial list has been loaded; stays true (like an informer's HasSynced). */
  readonly synced: boolean;
}

/** Listener bookkeeping shared by the sources: a throwing listener is logged, never propagated. */
export class ChangeEmitter {
  readonly #listeners: ((change: SourceChange) => void)[] = [];
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  add(listener: (change: SourceChange) => void): void {
    this.#listeners.push(listener);
  }

  emit(change: SourceChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (error) {
        this.#log.error('change listener threw', { trigger: change.trigger, error: String(error) });
      }
    }
  }
}
