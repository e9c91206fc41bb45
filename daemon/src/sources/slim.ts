// What the Kubernetes source keeps of an API object, and the Watch that hands ListWatch only that.
//
// ListWatch keeps its own cache of every object, so what it is given is made small first: the
// list function (mirror.ts) and SlimWatch turn each object into a "slim" entry holding only
// name/namespace/resourceVersion and the `readService`/`readNamespace` output, after dropping
// managedFields, status (but load balancer addresses) and the kubectl last-applied-configuration annotation. The same entry
// objects are the source's store, so each Service is held once.
//
// SlimWatch also asks for bookmarks (allowWatchBookmarks=true), which keep the resourceVersion
// fresh so that a re-opened watch does not need a relist, and turns an exception thrown while
// opening a watch (which ListWatch would leave as an unhandled rejection) into the done(err) path.

import { type KubeConfig, type KubernetesObject, Watch } from '@kubernetes/client-node';
import { isRecord } from '@slipstream/shared/core/record';
import type { ReadResult } from '@slipstream/shared/core/service';

export const LAST_APPLIED_ANNOTATION = 'kubectl.kubernetes.io/last-applied-configuration';

/**
 * Drops what the daemon never reads: status (but a Service's load balancer addresses),
 * metadata.managedFields and the kubectl last-applied-configuration annotation (a full copy of
 * the object). Returns a shallow copy; the input is not modified.
 */
export function stripObject(object: unknown): unknown {
  if (!isRecord(object)) return object;
  const { status, ...rest } = object;
  const lb = isRecord(status) && isRecord(status.loadBalancer) ? status.loadBalancer : undefined;
  if (lb && Array.isArray(lb.ingress) && lb.ingress.length > 0)
    rest.status = { loadBalancer: { ingress: lb.ingress } };
  if (isRecord(rest.metadata)) {
    const { managedFields: _managedFields, ...metadata } = rest.metadata;
    if (isRecord(metadata.annotations) && LAST_APPLIED_ANNOTATION in metadata.annotations) {
      const { [LAST_APPLIED_ANNOTATION]: _lastApplied, ...annotations } = metadata.annotations;
      metadata.annotations = annotations;
    }
    rest.metadata = metadata;
  }
  return rest;
}

/** What ListWatch caches and this module stores: identity plus the typed value (or why there is none). */
export interface Slim<T> extends KubernetesObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  value?: T;
  error?: string;
}

export function slim<T>(raw: unknown, read: (object: unknown) => ReadResult<T>): Slim<T> {
  const stripped = stripObject(raw);
  const metadata = isRecord(stripped) && isRecord(stripped.metadata) ? stripped.metadata : {};
  const identity: Slim<T>['metadata'] = { name: typeof metadata.name === 'string' ? metadata.name : '' };
  if (typeof metadata.namespace === 'string' && metadata.namespace !== '')
    identity.namespace = metadata.namespace;
  if (typeof metadata.resourceVersion === 'string') identity.resourceVersion = metadata.resourceVersion;
  const result = read(stripped);
  return result.ok
    ? { metadata: identity, value: result.value }
    : { metadata: identity, error: result.error };
}

/** Client-node's Watch, asking for bookmarks and handing ListWatch slim objects. */
export class SlimWatch<T> extends Watch {
  readonly #toSlim: (raw: unknown) => Slim<T>;

  constructor(config: KubeConfig, toSlim: (raw: unknown) => Slim<T>) {
    super(config);
    this.#toSlim = toSlim;
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const onEvent = (phase: string, object: unknown): void => {
      if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED')
        callback(phase, this.#toSlim(object));
      else callback(phase, object); // BOOKMARK (resourceVersion only) and ERROR (a Status) as they are
    };
    try {
      return await super.watch(path, { ...queryParams, allowWatchBookmarks: true }, onEvent, done);
    } catch (error) {
      done(error);
      return new AbortController();
    }
  }
}
