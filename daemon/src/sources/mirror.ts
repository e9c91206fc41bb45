// One resource (Services or Namespaces) mirrored from the API server with client-node's ListWatch,
// replaced by a fresh informer (full relist) after any error.
//
// How client-node 2.x's ListWatch behaves (dist/cache.js, dist/watch.js), and what is built on it:
//  - A watch that the server ends cleanly (timeout, apiserver shutdown) is re-opened by ListWatch
//    itself from the last resourceVersion, with its own backoff (1 s doubling to 30 s, reset by
//    any event). A 410 Gone (an ERROR event with code 410, or a 410 response) makes it relist.
//    A client-side inactivity timeout (30 s without a byte) re-opens the watch at once.
//  - ANY other failure (connection refused or reset mid-stream, HTTP 401/403/5xx, a failed list)
//    fires the 'error' callbacks and the ListWatch stops for good: it never retries by itself.
//    So on 'error' the Mirror throws that informer away and, after an exponential backoff, starts
//    a new one, which begins with a full list. The list is applied with replace semantics (objects
//    absent from it are deleted), so nothing is lost across an outage, deletions included.
//  - Lists are paged (limit/continue) over one connection; an expired continue token restarts
//    the list.

import {
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
} from '@kubernetes/client-node';
import { Backoff, type BackoffOptions } from '@slipstream/shared/adapters/backoff';
import { describeError, type SharedConnection, statusCode } from '@slipstream/shared/adapters/kube';
import type { Logger } from '@slipstream/shared/adapters/log';
import type { ReadResult } from '@slipstream/shared/core/service';
import { type Slim, SlimWatch, slim } from './slim.ts';

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
export type PageRequest = { limit: number; _continue?: string };
/** One page of a list: abort on `signal` or after the timeout, over the list's one connection. */
export type ListCall = (
  request: PageRequest,
  control: { signal: AbortSignal; timeoutMs: number; connection: SharedConnection },
) => Promise<ListPage>;

export interface MirrorOptions<T> {
  resource: 'services' | 'namespaces';
  path: string;
  kubeConfig: KubeConfig;
  list: ListCall;
  read: (object: unknown) => ReadResult<T>;
  key: (entry: Slim<T>) => string;
  /** After a change: the key of the one object that changed, or nothing (a list replaced several). */
  changed: (key?: string) => void;
  pageSize: number;
  listTimeoutMs: number;
  backoff: BackoffOptions;
  log: Logger;
}

/** One resource kept in sync: a ListWatch, replaced by a fresh one (full relist) after any error. */
export class Mirror<T> {
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
      if (current() && this.#put(entry)) this.#o.changed(this.#o.key(entry));
    };
    informer.on('add', upsert);
    informer.on('update', upsert);
    informer.on('delete', (entry) => {
      const key = this.#o.key(entry);
      if (current() && this.store.delete(key)) this.#o.changed(key);
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
    const connection: SharedConnection = {};
    for (;;) {
      const controller = new AbortController();
      this.#listAbort = controller;
      let page: ListPage;
      try {
        page = await this.#o.list(
          { limit: this.#o.pageSize, ...(token ? { _continue: token } : {}) },
          { signal: controller.signal, timeoutMs: this.#o.listTimeoutMs, connection },
        );
      } catch (error) {
        // An expired continue token (410): the snapshot is gone, so start the list over.
        if (token && statusCode(error) === 410 && expired++ < 3 && !this.#stopped) {
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
