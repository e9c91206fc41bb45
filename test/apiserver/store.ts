// The object store of the API server stand-in, with etcd's model of time: one cluster-wide
// resourceVersion that every write increases, and a bounded history of the write events that
// watches replay. Creates, updates and deletes follow kube-apiserver's registry: names are
// checked, the kind's defaults and validation applied (defaults.ts), admission run where asked,
// ClusterIPs allocated (cluster-ip.ts), uid/creationTimestamp/managedFields set by the server, an
// update carrying a stale metadata.resourceVersion refused with 409 Conflict, and an update that
// changes nothing not written at all.

import { randomBytes, randomUUID } from 'node:crypto';
import type { AdmissionRequest } from './admission.ts';
import { allocate, Ipam } from './cluster-ip.ts';
import { defaulted, managedFields, validate } from './defaults.ts';
import {
  child,
  clone,
  type Json,
  keyOf,
  RESOURCES,
  type StoredResource,
  str,
  timestamp,
} from './resources.ts';
import { notFound, StatusError } from './status.ts';

/** One write, as a watch sends it (`line`: the newline-terminated watch event). */
export interface StoreEvent {
  rv: number;
  resource: StoredResource;
  namespace: string | undefined;
  line: string;
}

/** Admission for a write that goes through it: the object to store (throws StatusError to refuse). */
export type Admit = (request: AdmissionRequest) => Promise<Json>;

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Secrets and webhook configurations take DNS subdomains (dots allowed, 253 characters). */
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export class ObjectStore {
  /** Called after every write (the watches' feed). */
  onCommit: ((event: StoreEvent) => void) | undefined;
  readonly #historyLimit: number;
  #rv = 100;
  readonly #objects: Record<StoredResource, Map<string, Json>> = {
    services: new Map(),
    namespaces: new Map(),
    secrets: new Map(),
    pods: new Map(),
    mutatingwebhookconfigurations: new Map(),
  };
  #history: StoreEvent[] = [];
  #compactedRv = 0;
  readonly #ipam = new Ipam();

  constructor(historyLimit = 1000) {
    this.#historyLimit = historyLimit;
  }

  /** The cluster's current resourceVersion (the last write's). */
  get resourceVersion(): number {
    return this.#rv;
  }

  /** Events at or below this resourceVersion are forgotten: a watch from before it gets 410. */
  get compactedRv(): number {
    return this.#compactedRv;
  }

  /** The stored object (not a copy: do not modify it). */
  get(resource: StoredResource, namespace: string | undefined, name: string): Json | undefined {
    return this.#objects[resource].get(keyOf(namespace, name));
  }

  /** The stored objects of a resource (of one namespace), in key order (not copies). */
  items(resource: StoredResource, namespace?: string): Json[] {
    const items: Json[] = [];
    for (const key of [...this.#objects[resource].keys()].sort()) {
      if (namespace !== undefined && !key.startsWith(`${namespace}/`)) continue;
      const object = this.#objects[resource].get(key);
      if (object) items.push(object);
    }
    return items;
  }

  /** The stored objects, in insertion order (what a watch from "now" starts with). */
  current(resource: StoredResource, namespace?: string): Json[] {
    const out: Json[] = [];
    for (const [key, object] of this.#objects[resource]) {
      if (namespace === undefined || key.startsWith(`${namespace}/`)) out.push(object);
    }
    return out;
  }

  /** The events after `rv` for a resource (of one namespace), or 'expired' when `rv` is older than the history. */
  since(rv: number, resource: StoredResource, namespace?: string): StoreEvent[] | 'expired' {
    if (rv < this.#compactedRv) return 'expired';
    return this.#history.filter(
      (e) => e.rv > rv && e.resource === resource && (namespace === undefined || e.namespace === namespace),
    );
  }

  /** The oldest resourceVersion still in the history (for the 410 message). */
  get oldestRv(): number {
    return this.#history[0]?.rv ?? this.#rv;
  }

  /** Forgets the history: a watch from any resourceVersion older than now gets 410. */
  compact(): void {
    this.#history = [];
    this.#compactedRv = this.#rv;
  }

  /** Stores (or deletes) `object` at the next resourceVersion and records the event; returns a copy. */
  commit(
    resource: StoredResource,
    type: 'ADDED' | 'MODIFIED' | 'DELETED',
    namespace: string | undefined,
    name: string,
    object: Json,
  ): Json {
    const rv = ++this.#rv;
    const stored = clone(object);
    child(stored, 'metadata').resourceVersion = String(rv);
    const key = keyOf(namespace, name);
    if (type === 'DELETED') this.#objects[resource].delete(key);
    else this.#objects[resource].set(key, stored);
    const event: StoreEvent = {
      rv,
      resource,
      namespace,
      line: `${JSON.stringify({ type, object: stored })}\n`,
    };
    this.#history.push(event);
    if (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.splice(0, this.#history.length - this.#historyLimit);
      const last = dropped[dropped.length - 1];
      if (last) this.#compactedRv = Math.max(this.#compactedRv, last.rv);
    }
    this.onCommit?.(event);
    return clone(stored);
  }

  /** POST. `admit`: run admission (Services and Namespaces only), as for a request from a client. */
  async create(
    resource: StoredResource,
    namespace: string | undefined,
    body: Json,
    admit?: Admit,
  ): Promise<Json> {
    const info = RESOURCES[resource];
    if (body.kind !== undefined && body.kind !== info.kind) {
      throw new StatusError(
        400,
        'BadRequest',
        `the kind of the object must be ${info.kind}, not ${String(body.kind)}`,
      );
    }
    const metadata = child(body, 'metadata');
    if (!str(metadata.name) && str(metadata.generateName)) {
      metadata.name = `${metadata.generateName}${randomBytes(3).toString('hex').slice(0, 5)}`;
    }
    const name = str(metadata.name);
    if (!name)
      throw new StatusError(
        422,
        'Invalid',
        `${info.kind} "" is invalid: metadata.name: Required value: name or generateName is required`,
      );
    const subdomain =
      resource === 'secrets' || resource === 'pods' || resource === 'mutatingwebhookconfigurations';
    if (subdomain ? !SUBDOMAIN.test(name) || name.length > 253 : !NAME.test(name) || name.length > 63) {
      throw new StatusError(
        422,
        'Invalid',
        `${info.kind} "${name}" is invalid: metadata.name: Invalid value: "${name}": a ${subdomain ? 'lowercase RFC 1123 subdomain' : 'DNS-1035 label'}`,
      );
    }
    const namespaceMissing = () =>
      new StatusError(404, 'NotFound', `namespaces "${namespace}" not found`, {
        name: namespace,
        kind: 'namespaces',
      });
    setNamespace(metadata, namespace);
    if (namespace !== undefined && !this.#objects.namespaces.has(namespace)) throw namespaceMissing();
    const key = keyOf(namespace, name);
    const exists = (): void => {
      if (this.#objects[resource].has(key)) {
        throw new StatusError(409, 'AlreadyExists', `${resource} "${name}" already exists`, {
          name,
          kind: resource,
        });
      }
    };
    exists();
    for (const field of ['uid', 'resourceVersion', 'creationTimestamp', 'managedFields', 'deletionTimestamp'])
      delete metadata[field];
    let object = defaulted(resource, body);
    validate(resource, object, undefined);
    if (admit && (resource === 'services' || resource === 'namespaces')) {
      object = await admit({
        operation: 'CREATE',
        resource,
        kind: resource === 'services' ? 'Service' : 'Namespace',
        ...(namespace !== undefined ? { namespace } : {}),
        name,
        object: clone(object),
      });
      validate(resource, object, undefined);
    }
    // Admission may have taken a while: check again what may have changed meanwhile.
    exists();
    if (namespace !== undefined && !this.#objects.namespaces.has(namespace)) throw namespaceMissing();
    const meta = child(object, 'metadata');
    meta.uid = randomUUID();
    meta.creationTimestamp = timestamp();
    meta.managedFields = managedFields('kubectl-client-side-apply', 'Update', info.apiVersion);
    if (resource === 'services') {
      allocate(object, undefined, this.#ipam);
      object.status = { loadBalancer: {} };
    } else if (resource === 'namespaces') {
      object.status = { phase: 'Active' };
    }
    return this.commit(resource, 'ADDED', namespace, name, object);
  }

  /** PUT (and the write of a PATCH). A metadata.resourceVersion in `body` is a precondition. */
  async update(
    resource: StoredResource,
    namespace: string | undefined,
    name: string,
    body: Json,
    admit?: Admit,
  ): Promise<Json> {
    const info = RESOURCES[resource];
    const key = keyOf(namespace, name);
    const current = this.#objects[resource].get(key);
    if (!current) throw notFound(resource, name);
    const metadata = child(body, 'metadata');
    if (metadata.name !== name) {
      throw new StatusError(
        400,
        'BadRequest',
        `the name of the object (${String(metadata.name)}) does not match the name on the URL (${name})`,
      );
    }
    setNamespace(metadata, namespace);
    const conflict = (): never => {
      throw new StatusError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, kind: resource },
      );
    };
    const currentMeta = child(current, 'metadata');
    const expectedRv = str(metadata.resourceVersion);
    if (expectedRv !== undefined && expectedRv !== currentMeta.resourceVersion) conflict();
    metadata.uid = currentMeta.uid;
    metadata.creationTimestamp = currentMeta.creationTimestamp;
    delete metadata.managedFields;
    let object = defaulted(resource, body);
    validate(resource, object, current);
    if (resource === 'services') allocate(object, current, this.#ipam);
    if (admit && (resource === 'services' || resource === 'namespaces')) {
      object = await admit({
        operation: 'UPDATE',
        resource,
        kind: resource === 'services' ? 'Service' : 'Namespace',
        ...(namespace !== undefined ? { namespace } : {}),
        name,
        object: clone(object),
        oldObject: clone(current),
      });
      validate(resource, object, current);
      if (resource === 'services') allocate(object, current, this.#ipam);
    }
    const latest = this.#objects[resource].get(key);
    if (!latest) throw notFound(resource, name);
    if (latest !== current) conflict(); // written by someone else during admission
    if (current.status !== undefined) object.status = current.status;
    const comparable = (o: Json): string => {
      const copy = clone(o);
      const m = child(copy, 'metadata');
      delete m.resourceVersion;
      delete m.managedFields;
      return JSON.stringify(copy);
    };
    if (comparable(object) === comparable(current)) return clone(current); // a no-op update writes nothing
    child(object, 'metadata').managedFields = [
      ...(Array.isArray(currentMeta.managedFields) ? currentMeta.managedFields : []),
      ...managedFields('kubectl-edit', 'Update', info.apiVersion),
    ].slice(-4);
    return this.commit(resource, 'MODIFIED', namespace, name, object);
  }

  /** The status subresource (what a cloud controller writes: a Service's load balancer ingress). */
  updateStatus(resource: StoredResource, namespace: string | undefined, name: string, status: Json): Json {
    const current = this.#objects[resource].get(keyOf(namespace, name));
    if (!current) throw notFound(resource, name);
    const object = clone(current);
    object.status = clone(status);
    return this.commit(resource, 'MODIFIED', namespace, name, object);
  }

  /** DELETE. Deleting a Namespace deletes its Services, Secrets and Pods at once (no graceful termination). */
  delete(resource: StoredResource, namespace: string | undefined, name: string): Json {
    const current = this.#objects[resource].get(keyOf(namespace, name));
    if (!current) throw notFound(resource, name);
    if (resource === 'namespaces') {
      for (const kind of ['services', 'secrets', 'pods'] as const) {
        for (const [key, object] of [...this.#objects[kind]]) {
          if (key.startsWith(`${name}/`))
            this.commit(kind, 'DELETED', name, key.slice(name.length + 1), object);
        }
      }
    }
    return this.commit(resource, 'DELETED', namespace, name, current);
  }
}

/** The request's namespace into the object's metadata; 400 when the object names another one. */
function setNamespace(metadata: Json, namespace: string | undefined): void {
  if (namespace === undefined) return;
  if (metadata.namespace !== undefined && metadata.namespace !== namespace) {
    throw new StatusError(
      400,
      'BadRequest',
      'the namespace of the provided object does not match the namespace sent on the request',
    );
  }
  metadata.namespace = namespace;
}
