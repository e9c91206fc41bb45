// Kubernetes mode: Services (all namespaces) and Namespaces mirrored from the API server with
// @kubernetes/client-node's ListWatch informer.
//
// How client-node 2.x's ListWatch behaves (dist/cache.js, dist/watch.js), and what is built on it:
//  - A watch that the server ends cleanly (timeout, apiserver shutdown) is re-opened by ListWatch
//    itself from the last resourceVersion, with its own backoff (1 s doubling to 30 s, reset by
//    any event). A 410 Gone (an ERROR event with code 410, or a 410 response) makes it relist.
//    A client-side inactivity timeout (30 s without a byte) re-opens the watch at once.
//  - ANY other failure (connection refused or reset mid-stream, HTTP 401/403/5xx, a failed list)
//    fires the 'error' callbacks and the ListWatch stops for good: it never retries by itself.
//    So on 'error' this module throws that informer away and, after an exponential backoff
//    (default 800 ms doubling to 30 s, with jitter, reset after 2 min without failure), starts a
//    new one, which begins with a full list. The list is applied with replace semantics (objects
//    absent from it are deleted), so nothing is lost across an outage, deletions included.
//  - ListWatch keeps its own cache of every object, so what it is given is made small first: the
//    list function and a Watch subclass turn each object into a "slim" entry holding only
//    name/namespace/resourceVersion and the `readService`/`readNamespace` output, after dropping
//    managedFields, status and the kubectl last-applied-configuration annotation. The same entry
//    objects are this module's store, so each Service is held once.
//  - Lists are paged (limit/continue); an expired continue token restarts the list.
//  - The Watch subclass asks for bookmarks (allowWatchBookmarks=true), which keep the
//    resourceVersion fresh so that a re-opened watch does not need a relist, and turns an
//    exception thrown while opening a watch (which ListWatch would leave as an unhandled
//    rejection) into the done(err) path.

import {
  type ConfigurationOptions,
  CoreV1Api,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  Observable,
  type RequestContext,
  type ResponseContext,
  Watch,
} from '@kubernetes/client-node';
import { Backoff, type BackoffOptions } from '@slipstream/shared/adapters/backoff';
import { type Logger, stderrLogger } from '@slipstream/shared/adapters/log';
import { isRecord } from '@slipstream/shared/core/record';
import {
  type Namespace,
  type ReadResult,
  readNamespace,
  readService,
  type Service,
  serviceKey,
} from '@slipstream/shared/core/service';
import { ChangeEmitter, type Rejected, type ServiceSource, type Snapshot, type Trigger } from './source.ts';

export const LAST_APPLIED_ANNOTATION = 'kubectl.kubernetes.io/last-applied-configuration';

/** The informers' restart backoff (the one backoff of shared/adapters/backoff.ts). */
export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 800, maxMs: 30_000, resetAfterMs: 120_000 };

/**
 * Drops what the daemon never reads: status, metadata.managedFields and the kubectl
 * last-applied-configuration annotation (a full copy of the object). Returns a shallow copy;
 * the input is not modified.
 */
export function stripObject(object: unknown): unknown {
  if (!isRecord(object)) return object;
  const { status: _status, ...rest } = object;
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

function slim<T>(raw: unknown, read: (object: unknown) => ReadResult<T>): Slim<T> {
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
class SlimWatch<T> extends Watch {
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

/** A short description of a client-node / fetch error (ApiException messages carry whole bodies). */
export function describeError(error: unknown): string {
  if (!isRecord(error) && !(error instanceof Error)) return String(error);
  const e = error as Record<string, unknown> & { message?: string; cause?: unknown };
  const code =
    typeof e.code === 'number' ? e.code : typeof e.statusCode === 'number' ? e.statusCode : undefined;
  if (code !== undefined) {
    const body = e.body;
    let message = typeof e.message === 'string' ? e.message.split('\n')[0] : '';
    if (isRecord(body) && typeof body.message === 'string') message = body.message;
    else if (typeof body === 'string' && body !== '') message = body.slice(0, 200);
    return `HTTP ${code}${message ? `: ${message.replace(/^HTTP-Code: \d+$/, '').trim()}` : ''}`.replace(
      /: $/,
      '',
    );
  }
  const cause = isRecord(e.cause) ? e.cause : undefined;
  const causeText = cause ? String(cause.code ?? cause.message ?? '') : '';
  const base = `${typeof e.name === 'string' && e.name !== 'Error' ? `${e.name}: ` : ''}${e.message ?? ''}`;
  return causeText && !base.includes(causeText) ? `${base} (${causeText})` : base;
}

export interface MirrorStatus {
  synced: boolean;
  objects: number;
  /** The resourceVersion the current informer has reached (lists, events and bookmarks). */
  resourceVersion: string;
  /** Informers thrown away after an error and started again. */
  restarts: number;
  lists: number;
  lastError?: string;
}

type ListPage = KubernetesListObject<KubernetesObject>;
type PageRequest = { limit: number; _continue?: string };
type SharedDispatcher = { dispatcher?: ReturnType<RequestContext['getDispatcher']> };
type ListCall = (request: PageRequest, signal: AbortSignal, shared: SharedDispatcher) => Promise<ListPage>;

interface MirrorOptions<T> {
  resource: 'services' | 'namespaces';
  path: string;
  kubeConfig: KubeConfig;
  list: ListCall;
  read: (object: unknown) => ReadResult<T>;
  key: (entry: Slim<T>) => string;
  changed: () => void;
  pageSize: number;
  listTimeoutMs: number;
  backoff: BackoffOptions;
  log: Logger;
}

/** One resource kept in sync: a ListWatch, replaced by a fresh one (full relist) after any error. */
class Mirror<T> {
  readonly store = new Map<string, Slim<T>>();
  readonly #o: MirrorOptions<T>;
  #informer: ListWatch<Slim<T>> | undefined;
  #generation = 0;
  readonly #backoff: Backoff;
  #restartTimer: NodeJS.Timeout | undefined;
  #listAbort: AbortController | undefined;
  #stopped = false;
  #synced = false;
  #restarts = 0;
  #lists = 0;
  #lastError: string | undefined;
  #resolveSynced: (() => void) | undefined;
  #rejectSynced: ((error: Error) => void) | undefined;
  readonly syncedPromise: Promise<void>;

  constructor(options: MirrorOptions<T>) {
    this.#o = options;
    this.#backoff = new Backoff(options.backoff);
    this.syncedPromise = new Promise<void>((resolve, reject) => {
      this.#resolveSynced = resolve;
      this.#rejectSynced = reject;
    });
    this.syncedPromise.catch(() => {}); // observed by start(); never an unhandled rejection
  }

  status(): MirrorStatus {
    return {
      synced: this.#synced,
      objects: this.store.size,
      resourceVersion: this.#informer?.latestResourceVersion() ?? '',
      restarts: this.#restarts,
      lists: this.#lists,
      ...(this.#lastError !== undefined ? { lastError: this.#lastError } : {}),
    };
  }

  start(): void {
    this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#generation++;
    clearTimeout(this.#restartTimer);
    this.#listAbort?.abort(new Error('stopped'));
    this.#rejectSynced?.(new Error(`stopped before the ${this.#o.resource} were listed`));
    const informer = this.#informer;
    this.#informer = undefined;
    await informer?.stop();
  }

  #run(): void {
    if (this.#stopped) return;
    const generation = ++this.#generation;
    const toSlim = (raw: unknown): Slim<T> => slim(raw, this.#o.read);
    const informer = new ListWatch<Slim<T>>(
      this.#o.path,
      new SlimWatch(this.#o.kubeConfig, toSlim),
      () => this.#list(generation, toSlim),
      false,
    );
    const current = (): boolean => generation === this.#generation && !this.#stopped;
    const upsert = (entry: Slim<T>): void => {
      if (current() && this.#put(entry)) this.#o.changed();
    };
    informer.on('add', upsert);
    informer.on('update', upsert);
    informer.on('delete', (entry) => {
      if (current() && this.store.delete(this.#o.key(entry))) this.#o.changed();
    });
    informer.on('error', (error) => this.#failed(generation, error));
    informer.on('connect', () => {
      if (current()) this.#o.log.debug(`${this.#o.resource}: (re)connecting`);
    });
    this.#informer = informer;
    informer.start().catch((error: unknown) => this.#failed(generation, error));
  }

  #failed(generation: number, error: unknown): void {
    if (this.#stopped || generation !== this.#generation) return; // an informer already replaced
    this.#generation++; // silences the old informer's callbacks
    const old = this.#informer;
    this.#informer = undefined;
    void old?.stop().catch(() => {});
    const delay = this.#backoff.next();
    this.#lastError = describeError(error);
    this.#restarts++;
    this.#o.log.warn(`${this.#o.resource}: list/watch failed; relisting in ${delay} ms`, {
      error: this.#lastError,
      attempt: this.#backoff.failures,
    });
    this.#restartTimer = setTimeout(() => this.#run(), delay);
  }

  async #list(generation: number, toSlim: (raw: unknown) => Slim<T>): Promise<KubernetesListObject<Slim<T>>> {
    const items: Slim<T>[] = [];
    let resourceVersion = '';
    let token: string | undefined;
    let expired = 0;
    const shared: SharedDispatcher = {};
    for (;;) {
      const controller = new AbortController();
      this.#listAbort = controller;
      const signal = AbortSignal.any([controller.signal, AbortSignal.timeout(this.#o.listTimeoutMs)]);
      let page: ListPage;
      try {
        page = await this.#o.list(
          { limit: this.#o.pageSize, ...(token ? { _continue: token } : {}) },
          signal,
          shared,
        );
      } catch (error) {
        // An expired continue token (410): the snapshot is gone, so start the list over.
        if (token && isRecord(error) && error.code === 410 && expired++ < 3 && !this.#stopped) {
          this.#o.log.info(`${this.#o.resource}: continue token expired; restarting the list`);
          items.length = 0;
          token = undefined;
          continue;
        }
        throw error;
      } finally {
        if (this.#listAbort === controller) this.#listAbort = undefined;
      }
      if (!token) resourceVersion = page.metadata?.resourceVersion ?? '';
      for (const item of page.items) items.push(toSlim(item));
      token = page.metadata?._continue || undefined;
      if (!token) break;
    }
    if (generation !== this.#generation || this.#stopped) throw new Error('superseded');
    this.#lists++;
    this.#replace(items);
    if (this.#lastError !== undefined) {
      this.#o.log.info(`${this.#o.resource}: listed again after an error`, { objects: this.store.size });
    }
    this.#lastError = undefined;
    if (!this.#synced) {
      this.#synced = true;
      this.#resolveSynced?.();
    }
    return { metadata: { resourceVersion }, items };
  }

  /**
   * Stores an entry; true when what the daemon sees changed. The entry always replaces the stored
   * one (so that ListWatch's cache and this store hold the same objects, never two copies), but an
   * unchanged Service keeps its identity: the stored value moves into the new entry. That covers
   * relists (same resourceVersion) and updates the daemon cannot see (status, managedFields).
   */
  #put(entry: Slim<T>): boolean {
    const key = this.#o.key(entry);
    const existing = this.store.get(key);
    if (existing === entry) return false;
    if (existing) {
      const rv = entry.metadata.resourceVersion;
      const same =
        (rv !== undefined && existing.metadata.resourceVersion === rv) ||
        (existing.error === entry.error && JSON.stringify(existing.value) === JSON.stringify(entry.value));
      if (same) {
        if (existing.value !== undefined) entry.value = existing.value;
        this.store.set(key, entry);
        return false;
      }
    }
    this.store.set(key, entry);
    return true;
  }

  /** A full list: everything in it is stored, everything not in it is deleted. */
  #replace(items: Slim<T>[]): void {
    let changed = false;
    const seen = new Set<string>();
    for (const entry of items) {
      seen.add(this.#o.key(entry));
      if (this.#put(entry)) changed = true;
    }
    for (const key of this.store.keys()) {
      if (!seen.has(key)) {
        this.store.delete(key);
        changed = true;
      }
    }
    if (changed) this.#o.changed();
  }
}

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

export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error(`kubeconfig${path ? ` ${path}` : ''} has no current cluster`);
  return kc;
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
    // Per-request middleware (client-node's Observable flavour): lets a list page be timed out or
    // aborted, and makes the pages of one list share a connection. (client-node builds a new
    // undici Agent, so a new connection and TLS handshake, for every request; 100,000 Services are
    // 200 pages. Each new list starts from a fresh Agent, so rotated credentials are picked up.)
    const withSignal = (signal: AbortSignal, shared: SharedDispatcher): ConfigurationOptions => ({
      middleware: [
        {
          pre: (context: RequestContext) => {
            context.setSignal(signal);
            if (shared.dispatcher) context.setDispatcher(shared.dispatcher);
            else shared.dispatcher = context.getDispatcher();
            return new Observable(Promise.resolve(context));
          },
          post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
        },
      ],
      middlewareMergeStrategy: 'append',
    });
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
      list: (request, signal, shared) => api.listServiceForAllNamespaces(request, withSignal(signal, shared)),
      read: readService,
      key: (entry) => serviceKey({ namespace: entry.metadata.namespace ?? '', name: entry.metadata.name }),
      changed: () => this.#changed('service'),
    });
    this.#namespaces = new Mirror<Namespace>({
      ...common,
      resource: 'namespaces',
      path: '/api/v1/namespaces',
      list: (request, signal, shared) => api.listNamespace(request, withSignal(signal, shared)),
      read: readNamespace,
      key: (entry) => entry.metadata.name,
      changed: () => this.#changed('namespace'),
    });
  }

  get synced(): boolean {
    return this.#synced;
  }

  onChange(listener: (trigger: Trigger) => void): void {
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

  #changed(trigger: Trigger): void {
    this.#snapshotCache = undefined;
    if (trigger === 'service') {
      this.#servicesCache = undefined;
      this.#rejectedCache = undefined;
    } else {
      this.#namespacesCache = undefined;
    }
    if (this.#synced) this.#emitter.emit(trigger);
  }
}
