// The loop's inputs: the latest Services, Namespaces, flowtable devices and policy, as the sources
// last reported them, and what changed since a sync last took them. Sources either hand over whole
// snapshots (`update`, compared by object identity: sources replace a Service that changes, never
// mutate it) or single objects (`setService`, informer style). Nothing here touches the kernel.

import type { Policy } from '@slipstream/shared/core/policy';
import { type Namespace, type Service, serviceKey } from '@slipstream/shared/core/service';

export interface InputSnapshot {
  services: ReadonlyMap<string, Service>;
  namespaces: ReadonlyMap<string, Namespace>;
  devices: readonly string[];
  /** This node's own addresses (nodePort traffic is addressed to them). */
  nodeAddresses: readonly string[];
  policy: Policy;
  /** Changes since the previous `take()`: Service keys, or `all` (policy, Namespaces or devices changed). */
  changed: ReadonlySet<string> | 'all';
  /** Inputs not reported yet (nothing is written until every source has reported once). */
  missing: string[];
}

export interface UpdateInputs {
  services?: Iterable<Service>;
  /** A Map by name (kept by reference while the source keeps it) or any iterable of Namespaces. */
  namespaces?: ReadonlyMap<string, Namespace> | Iterable<Namespace>;
  devices?: Iterable<string>;
  nodeAddresses?: Iterable<string>;
}

export class InputStore {
  #services = new Map<string, Service>();
  #pendingList: Iterable<Service> | null = null;
  #namespaces: ReadonlyMap<string, Namespace> = new Map();
  #ownNamespaces = true;
  #devices: string[] = [];
  #nodeAddresses: string[] = [];
  #policy: Policy;
  #changed = new Set<string>();
  #all = true;
  readonly #primed = { services: false, namespaces: false, devices: false };
  /** Counts every change: a sync compares it to know whether inputs moved while it ran. */
  version = 0;

  constructor(policy: Policy) {
    this.#policy = policy;
  }

  /** Replaces whole inputs; each one given marks that source as reported. */
  update(inputs: UpdateInputs): void {
    if (inputs.services) {
      // Kept by reference and compared at the next take: a burst of source events costs one pass.
      this.#pendingList = inputs.services;
      this.#primed.services = true;
      this.version++;
    }
    if (inputs.namespaces) {
      const given = inputs.namespaces;
      // Sources pass the same Map while their Namespaces do not change: that keeps syncs incremental.
      if (given !== this.#namespaces) this.#all = true;
      if (given instanceof Map) {
        this.#namespaces = given as ReadonlyMap<string, Namespace>;
        this.#ownNamespaces = false;
      } else {
        const byName = new Map<string, Namespace>();
        for (const n of given as Iterable<Namespace>) byName.set(n.name, n);
        this.#namespaces = byName;
        this.#ownNamespaces = true;
      }
      this.#primed.namespaces = true;
      this.version++;
    }
    if (inputs.devices) this.setDevices(inputs.devices);
    if (inputs.nodeAddresses) this.setNodeAddresses(inputs.nodeAddresses);
  }

  setNodeAddresses(addresses: Iterable<string>): void {
    const list = [...addresses].sort();
    if (list.join(' ') === this.#nodeAddresses.join(' ')) return;
    this.#nodeAddresses = list;
    this.#all = true;
    this.version++;
  }

  setService(service: Service): void {
    this.#applyPendingList();
    const key = serviceKey(service);
    if (this.#services.get(key) === service) return;
    this.#services.set(key, service);
    this.#changed.add(key);
    this.version++;
  }

  deleteService(namespace: string, name: string): void {
    this.#applyPendingList();
    const key = serviceKey({ namespace, name });
    if (!this.#services.delete(key)) return;
    this.#changed.add(key);
    this.version++;
  }

  setNamespace(namespace: Namespace): void {
    this.#editableNamespaces().set(namespace.name, namespace);
    this.#all = true;
    this.version++;
  }

  deleteNamespace(name: string): void {
    this.#editableNamespaces().delete(name);
    this.#all = true;
    this.version++;
  }

  setDevices(devices: Iterable<string>): void {
    const list = [...devices];
    if (list.length !== this.#devices.length || list.some((d, i) => d !== this.#devices[i])) {
      this.#all = true;
      this.version++;
    }
    this.#devices = list;
    this.#primed.devices = true;
  }

  setPolicy(policy: Policy): void {
    if (policy === this.#policy) return;
    this.#policy = policy;
    this.#all = true;
    this.version++;
  }

  /** Forces the next sync to look at everything (after a read-back, a refused transaction, ...). */
  invalidate(): void {
    this.#all = true;
  }

  get policy(): Policy {
    return this.#policy;
  }

  get namespaces(): ReadonlyMap<string, Namespace> {
    return this.#namespaces;
  }

  get services(): ReadonlyMap<string, Service> {
    this.#applyPendingList();
    return this.#services;
  }

  #applyPendingList(): void {
    const list = this.#pendingList;
    if (!list) return;
    this.#pendingList = null;
    const next = new Map<string, Service>();
    for (const s of list) next.set(serviceKey(s), s);
    for (const [key, s] of next) if (this.#services.get(key) !== s) this.#changed.add(key);
    for (const key of this.#services.keys()) if (!next.has(key)) this.#changed.add(key);
    this.#services = next;
  }

  /** The current inputs and what changed since the last take; the change set starts over. */
  take(needDevices: boolean): InputSnapshot {
    this.#applyPendingList();
    const missing: string[] = [];
    if (!this.#primed.services) missing.push('services');
    if (!this.#primed.namespaces) missing.push('namespaces');
    if (needDevices && !this.#primed.devices) missing.push('devices');
    const changed: ReadonlySet<string> | 'all' = this.#all ? 'all' : this.#changed;
    if (missing.length === 0) {
      this.#changed = new Set();
      this.#all = false;
    }
    return {
      services: this.#services,
      namespaces: this.#namespaces,
      devices: this.#devices,
      nodeAddresses: this.#nodeAddresses,
      policy: this.#policy,
      changed,
      missing,
    };
  }

  #editableNamespaces(): Map<string, Namespace> {
    if (!this.#ownNamespaces) {
      this.#namespaces = new Map(this.#namespaces);
      this.#ownNamespaces = true;
    }
    return this.#namespaces as Map<string, Namespace>;
  }
}
