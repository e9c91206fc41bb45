// Watches in the API server stand-in, as kube-apiserver streams them: newline-delimited
// `{"type", "object"}` events over chunked transfer encoding; replayed from the store's history
// after `resourceVersion=N`, or the current objects as ADDED first without one (or with 0); a
// `resourceVersion` older than the history answers 200 with one ERROR event carrying a 410
// Expired Status, then ends; BOOKMARK events to watches that asked (`allowWatchBookmarks`);
// `timeoutSeconds`. The faults a test injects into open watches are here too: reset or end them,
// expire them (ERROR 410), hold delivery back and release it.

import type http from 'node:http';
import { RESOURCES, type StoredResource } from './resources.ts';
import { StatusError, statusObject } from './status.ts';
import type { ObjectStore, StoreEvent } from './store.ts';

interface Watcher {
  resource: StoredResource;
  namespace: string | undefined;
  bookmarks: boolean;
  res: http.ServerResponse;
  queue: string[];
  timer: NodeJS.Timeout | undefined;
  closed: boolean;
}

const eventLine = (type: string, object: unknown) => `${JSON.stringify({ type, object })}\n`;

export class WatchHub {
  readonly #store: ObjectStore;
  readonly #watchers = new Set<Watcher>();
  #held = false;

  constructor(store: ObjectStore) {
    this.#store = store;
  }

  /** Open watch connections (of one resource, or all). */
  count(resource?: StoredResource): number {
    let n = 0;
    for (const w of this.#watchers) if (!w.closed && (resource === undefined || w.resource === resource)) n++;
    return n;
  }

  /** A write: sent to every watch of its resource (and namespace). */
  publish(event: StoreEvent): void {
    for (const w of this.#watchers) {
      if (w.resource === event.resource && (w.namespace === undefined || w.namespace === event.namespace))
        this.#send(w, event.line);
    }
  }

  /** Answers a watch request (`?watch=true`) on `res`; throws StatusError for a bad resourceVersion. */
  open(
    resource: StoredResource,
    namespace: string | undefined,
    query: URLSearchParams,
    res: http.ServerResponse,
  ): void {
    const raw = query.get('resourceVersion') ?? '';
    if (raw !== '' && !/^[0-9]+$/.test(raw)) {
      throw new StatusError(400, 'BadRequest', `resourceVersion: Invalid value: "${raw}": must be a number`);
    }
    const from = raw === '' ? 0 : Number(raw);
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();
    const replay = from === 0 ? undefined : this.#store.since(from, resource, namespace);
    if (replay === 'expired') {
      const status = statusObject(
        410,
        'Expired',
        `too old resource version: ${from} (${this.#store.oldestRv})`,
      );
      res.end(eventLine('ERROR', status));
      return;
    }
    const watcher: Watcher = {
      resource,
      namespace,
      bookmarks: query.get('allowWatchBookmarks') === 'true',
      res,
      queue: [],
      timer: undefined,
      closed: false,
    };
    this.#watchers.add(watcher);
    res.on('close', () => this.#close(watcher));
    const timeout = Number(query.get('timeoutSeconds') ?? '0');
    if (timeout > 0) watcher.timer = setTimeout(() => this.#end(watcher), timeout * 1000);
    if (replay === undefined) {
      // "Get state and start at most recent": synthetic ADDED events for what exists now.
      for (const object of this.#store.current(resource, namespace))
        this.#send(watcher, eventLine('ADDED', object));
      return;
    }
    for (const event of replay) this.#send(watcher, event.line);
  }

  /** 'reset': destroy the sockets (a network failure); 'end': finish the responses cleanly (a server-side timeout). */
  drop(how: 'reset' | 'end' = 'reset', resource?: StoredResource): number {
    let n = 0;
    for (const w of [...this.#watchers]) {
      if (resource !== undefined && w.resource !== resource) continue;
      n++;
      if (how === 'reset') {
        w.res.socket?.destroy();
        this.#close(w);
      } else {
        this.#end(w);
      }
    }
    return n;
  }

  /** Sends every open watch an ERROR event with a 410 Status and closes it (as after a watch-cache reset). */
  expire(resource?: StoredResource): void {
    for (const w of [...this.#watchers]) {
      if (resource !== undefined && w.resource !== resource) continue;
      w.queue = [];
      const status = statusObject(
        410,
        'Expired',
        `too old resource version: watch expired (${this.#store.resourceVersion})`,
      );
      if (!w.res.writableEnded) w.res.write(eventLine('ERROR', status));
      this.#end(w);
    }
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks. */
  bookmark(resource?: StoredResource): void {
    for (const w of this.#watchers) {
      if (!w.bookmarks || (resource !== undefined && w.resource !== resource)) continue;
      const object = {
        kind: RESOURCES[w.resource].kind,
        apiVersion: RESOURCES[w.resource].apiVersion,
        metadata: { resourceVersion: String(this.#store.resourceVersion) },
      };
      this.#send(w, eventLine('BOOKMARK', object));
    }
  }

  /** Stops delivering events (they queue) until release(). New watches are held too. */
  hold(): void {
    this.#held = true;
  }

  release(): void {
    this.#held = false;
    for (const w of this.#watchers) {
      const queued = w.queue;
      w.queue = [];
      for (const line of queued) this.#send(w, line);
    }
  }

  /** Forgets every watch (their connections are being closed). */
  closeAll(): void {
    for (const w of [...this.#watchers]) this.#close(w);
  }

  #send(w: Watcher, line: string): void {
    if (w.closed || w.res.writableEnded) return;
    if (this.#held) w.queue.push(line);
    else w.res.write(line);
  }

  #close(w: Watcher): void {
    w.closed = true;
    clearTimeout(w.timer);
    this.#watchers.delete(w);
  }

  #end(w: Watcher): void {
    this.#close(w);
    if (!w.res.writableEnded) w.res.end();
  }
}
