// The loop's inputs: the latest Services, Namespaces, flowtable devices and policy, as the sources
// last reported them, and what changed since a sync last took them. Sources either hand over whole
// snapshots (`update`, compared by object identity: sources replace a Service that changes, never
// mutate it) or single objects (`setService`, informer style). Nothing here touches the kernel.
// Each Service change is stamped with when it was first seen, for the network-programming latency
// (seen -> committed); the initial state (everything before the first complete take) is not a change.

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
  /** When each Service change since the previous `take()` was first seen (epoch ms), by Service key. */
  seen: ReadonlyMap<string, number>;
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
  #seen = new Map<string, number>();
  /** When the pending Service list first arrived: the changes found in it are stamped with this. */
  #pendingSince = 0;
  /** Changes are stamped once the initial state has been taken. */
  #stamping = false;
  readonly #now: () => number;
  #all = true;
  readonly #primed = { services: false, namespaces: false, devices: false };
  /** Counts every change: a sync compares it to know whether inputs moved while it ran. */
  version = 0;

  constructor(policy: Policy, now: () => number = Date.now) {
    this.#policy = policy;
    this.#now = now;
  }

  /** Replaces whole inputs; each one given marks that source as reported. */
  update(inputs: UpdateInputs): void {
    if (inputs.services) {
      // Kept by reference and compared at the next take: a burst of source events costs one pass.
      // Its changes are stamped with the first list's arrival: an upper bound, never an understatement.
      if (this.#pendingList === null) this.#pendingSince = this.#now();
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
    this.#change(key, this.#now());
    this.version++;
  }

  deleteService(namespace: string, name: string): void {
    this.#applyPendingList();
    const key = serviceKey({ namespace, name });
    if (!this.#services.delete(key)) return;
    this.#change(key, this.#now());
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

  get devices(): readonly string[] {
    return this.#devices;
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
    const at = this.#pendingSince;
    for (const [key, s] of next) if (this.#services.get(key) !== s) this.#change(key, at);
    for (const key of this.#services.keys()) if (!next.has(key)) this.#change(key, at);
    this.#services = next;
  }

  #change(key: string, at: number): void {
    this.#changed.add(key);
    if (this.#stamping && !this.#seen.has(key)) this.#seen.set(key, at);
  }

  /** The current inputs and what changed since the last take; the change set starts over. */
  take(needDevices: boolean): InputSnapshot {
    this.#applyPendingList();
    const missing: string[] = [];
    if (!this.#primed.services) missing.push('services');
    if (!this.#primed.namespaces) missing.push('namespaces');
    if (needDevices && !this.#primed.devices) missing.push('devices');
    const changed: ReadonlySet<string> | 'all' = this.#all ? 'all' : this.#changed;
    const seen = this.#seen;
    if (missing.length === 0) {
      this.#changed = new Set();
      this.#seen = new Map();
      this.#all = false;
      this.#stamping = true;
    }
    return {
      services: this.#services,
      namespaces: this.#namespaces,
      devices: this.#devices,
      nodeAddresses: this.#nodeAddresses,
      policy: this.#policy,
      changed,
      missing,
      seen,
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
