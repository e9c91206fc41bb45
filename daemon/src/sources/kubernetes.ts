// Kubernetes mode: Services (all namespaces) and Namespaces mirrored from the API server, each by
// a Mirror (mirror.ts: client-node's ListWatch, restarted with a fresh list after any error) over
// slim entries (slim.ts). The Mirrors' stores are this source's state; the snapshot is rebuilt
// only after a change.

import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { BackoffOptions } from '@slipstream/shared/adapters/backoff';
import { loadKubeConfig, requestOptions } from '@slipstream/shared/adapters/kube';
import { type Logger, stderrLogger } from '@slipstream/shared/adapters/log';
import {
  type Namespace,
  readNamespace,
  readService,
  type Service,
  serviceKey,
  splitServiceKey,
} from '@slipstream/shared/core/service';
import { Mirror, type MirrorStatus } from './mirror.ts';
import {
  ChangeEmitter,
  type Rejected,
  type ServiceSource,
  type Snapshot,
  type SourceChange,
  type Trigger,
} from './source.ts';

/**
 * The informers' restart backoff (the one backoff of shared/adapters/backoff.ts): 800 ms doubling
 * to 30 s, with jitter, reset after 2 min without failure.
 */
export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 800, maxMs: 30_000, resetAfterMs: 120_000 };

export interface KubernetesSourceOptions {
  /** Path of a kubeconfig file. Default: in-cluster config when running in a Pod, else $KUBECONFIG / ~/.kube/config. */
  kubeconfig?: string;
  /** An already loaded KubeConfig (wins over `kubeconfig`). */
  kubeConfig?: KubeConfig;
  /** Objects per list page (default 500). */
  pageSize?: number;
  /** Timeout of one list page request (default 60 s). */
  listTimeoutMs?: number;
  backoff?: Partial<BackoffOptions>;
  log?: Logger;
}

export class KubernetesSource implements ServiceSource {
  readonly #log: Logger;
  readonly #emitter: ChangeEmitter;
  readonly #services: Mirror<Service>;
  readonly #namespaces: Mirror<Namespace>;
  #synced = false;
  #started = false;
  #servicesCache: Service[] | undefined;
  #rejectedCache: Rejected[] | undefined;
  #namespacesCache: Map<string, Namespace> | undefined;
  #snapshotCache: Snapshot | undefined;

  constructor(options: KubernetesSourceOptions = {}) {
    this.#log = options.log ?? stderrLogger;
    this.#emitter = new ChangeEmitter(this.#log);
    const kubeConfig = options.kubeConfig ?? loadKubeConfig(options.kubeconfig);
    const api = kubeConfig.makeApiClient(CoreV1Api);
    const common = {
      kubeConfig,
      pageSize: options.pageSize ?? 500,
      listTimeoutMs: options.listTimeoutMs ?? 60_000,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      log: this.#log,
    };
    this.#services = new Mirror<Service>({
      ...common,
      resource: 'services',
      path: '/api/v1/services',
      list: (request, control) => api.listServiceForAllNamespaces(request, requestOptions(control)),
      read: readService,
      key: (entry) => serviceKey({ namespace: entry.metadata.namespace ?? '', name: entry.metadata.name }),
      changed: (key) => this.#changed('service', key),
    });
    this.#namespaces = new Mirror<Namespace>({
      ...common,
      resource: 'namespaces',
      path: '/api/v1/namespaces',
      list: (request, control) => api.listNamespace(request, requestOptions(control)),
      read: readNamespace,
      key: (entry) => entry.metadata.name,
      changed: () => this.#changed('namespace'),
    });
  }

  get synced(): boolean {
    return this.#synced;
  }

  onChange(listener: (change: SourceChange) => void): void {
    this.#emitter.add(listener);
  }

  /** Resolves once both Services and Namespaces are listed; retries (with backoff) until then. */
  async start(): Promise<void> {
    if (this.#started) throw new Error('KubernetesSource was already started');
    this.#started = true;
    this.#services.start();
    this.#namespaces.start();
    await Promise.all([this.#services.syncedPromise, this.#namespaces.syncedPromise]);
    this.#synced = true;
    const s = this.snapshot();
    this.#log.info(`listed ${s.services.length} Services and ${s.namespaces.size} Namespaces`, {
      rejected: s.rejected.length,
    });
  }

  async stop(): Promise<void> {
    await Promise.all([this.#services.stop(), this.#namespaces.stop()]);
  }

  status(): { services: MirrorStatus; namespaces: MirrorStatus } {
    return { services: this.#services.status(), namespaces: this.#namespaces.status() };
  }

  snapshot(): Snapshot {
    if (this.#snapshotCache) return this.#snapshotCache;
    if (!this.#servicesCache || !this.#rejectedCache) {
      const services: Service[] = [];
      const rejected: Rejected[] = [];
      for (const [key, entry] of this.#services.store) {
        if (entry.value) services.push(entry.value);
        else rejected.push({ ref: key, error: entry.error ?? 'unreadable' });
      }
      this.#servicesCache = services;
      this.#rejectedCache = rejected;
    }
    if (!this.#namespacesCache) {
      const namespaces = new Map<string, Namespace>();
      for (const [name, entry] of this.#namespaces.store) if (entry.value) namespaces.set(name, entry.value);
      this.#namespacesCache = namespaces;
    }
    this.#snapshotCache = {
      services: this.#servicesCache,
      namespaces: this.#namespacesCache,
      rejected: this.#rejectedCache,
    };
    return this.#snapshotCache;
  }

  /** `key`: the one Service that changed (an event), handed on as it is now; none: a relist. */
  #changed(trigger: Trigger, key?: string): void {
    // Rebuilt only when asked for (start-up, a relist, status): not once per event.
    this.#snapshotCache = undefined;
    if (trigger === 'service') {
      this.#servicesCache = undefined;
      this.#rejectedCache = undefined;
    } else {
      this.#namespacesCache = undefined;
    }
    if (!this.#synced) return;
    if (trigger !== 'service' || key === undefined) {
      this.#emitter.emit({ trigger });
      return;
    }
    const value = this.#services.store.get(key)?.value ?? null;
    this.#emitter.emit({ trigger, service: { ...splitServiceKey(key), value } });
  }
}
