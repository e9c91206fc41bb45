// Lists in the API server stand-in: `{kind: XList, apiVersion, metadata: {resourceVersion}, items}`
// with items stripped of kind and apiVersion (as the real server sends them), and limit/continue
// paging over a consistent snapshot: the pages of one list all show the store as it was at its
// first page. A continue token expires with compaction (410 Expired), as in kube-apiserver.
// `labelSelector` filters the items (field selectors are not modelled).

import { randomBytes } from 'node:crypto';
import { isRecord } from '@slipstream/shared/core/record';
import { type LabelSelector, parseLabelSelector, selectorMatches } from '../lib/label-selector.ts';
import { type Json, RESOURCES, type StoredResource } from './resources.ts';
import { StatusError } from './status.ts';
import type { ObjectStore } from './store.ts';

interface Snapshot {
  rv: number;
  resource: StoredResource;
  namespace: string | undefined;
  items: Json[];
  limit: number;
}

/** Continue tokens kept at most (the oldest go first). */
const MAX_SNAPSHOTS = 64;

export class Lister {
  readonly #store: ObjectStore;
  readonly #continues = new Map<string, Snapshot>();

  constructor(store: ObjectStore) {
    this.#store = store;
  }

  /** Expires every continue token (with the store's compaction). */
  clear(): void {
    this.#continues.clear();
  }

  /** The list answer to `?limit=&continue=&labelSelector=`. */
  list(resource: StoredResource, namespace: string | undefined, query: URLSearchParams): Json {
    const info = RESOURCES[resource];
    const limit = Number(query.get('limit') ?? '0');
    const token = query.get('continue');
    let snapshot: Snapshot;
    if (token) {
      const found = this.#continues.get(token);
      this.#continues.delete(token);
      if (
        !found ||
        found.rv < this.#store.compactedRv ||
        found.resource !== resource ||
        found.namespace !== namespace
      ) {
        throw new StatusError(
          410,
          'Expired',
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
        );
      }
      snapshot = { ...found, limit: limit > 0 ? limit : found.limit };
    } else {
      const selector = labelSelector(query.get('labelSelector'));
      const items = this.#store
        .items(resource, namespace)
        .filter((item) => selectorMatches(selector, labelsOf(item)));
      snapshot = { rv: this.#store.resourceVersion, resource, namespace, items, limit };
    }
    const page = snapshot.limit > 0 ? snapshot.items.slice(0, snapshot.limit) : snapshot.items;
    const rest = snapshot.limit > 0 ? snapshot.items.slice(snapshot.limit) : [];
    const metadata: Json = { resourceVersion: String(snapshot.rv) };
    if (rest.length > 0) {
      const next = randomBytes(12).toString('base64url');
      this.#continues.set(next, { ...snapshot, items: rest });
      while (this.#continues.size > MAX_SNAPSHOTS) {
        const oldest = this.#continues.keys().next().value;
        if (oldest === undefined) break;
        this.#continues.delete(oldest);
      }
      metadata.continue = next;
      metadata.remainingItemCount = rest.length;
    }
    return {
      kind: info.listKind,
      apiVersion: info.apiVersion,
      metadata,
      // The real server sends list items without kind and apiVersion.
      items: page.map(({ kind: _kind, apiVersion: _apiVersion, ...rest }) => rest),
    };
  }
}

function labelSelector(text: string | null): LabelSelector | undefined {
  if (!text) return undefined;
  try {
    return parseLabelSelector(text);
  } catch (error) {
    throw new StatusError(400, 'BadRequest', `unable to parse requirement: ${(error as Error).message}`);
  }
}

function labelsOf(object: Json): Record<string, string> {
  const labels = isRecord(object.metadata) ? object.metadata.labels : undefined;
  return isRecord(labels) ? (labels as Record<string, string>) : {};
}
