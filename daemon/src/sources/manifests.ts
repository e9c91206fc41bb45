// The manifests of embedded mode, parsed: one file's text → the core/v1 Services and Namespaces in
// it. A file may hold many YAML documents and `kind: List` (or any `*List` with `items`); other
// kinds and API groups are ignored. Any YAML error fails the whole file, so that a half-written
// file never removes objects.

import { basename } from 'node:path';
import { isRecord } from '@slipstream/shared/core/record';
import { type Namespace, readNamespace, readService, type Service } from '@slipstream/shared/core/service';
import { parseAllDocuments } from 'yaml';
import type { Rejected } from './source.ts';

export interface ManifestContent {
  services: Service[];
  namespaces: Namespace[];
  rejected: Rejected[];
  /** Objects of other kinds (or other API groups) that were skipped. */
  ignored: number;
}

export type ParseResult = { ok: true; content: ManifestContent } | { ok: false; error: string };

const MAX_LIST_DEPTH = 4;

function metaString(object: Record<string, unknown>, field: string): string | undefined {
  const metadata = object.metadata;
  if (!isRecord(metadata)) return undefined;
  const value = metadata[field];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/**
 * Parses the text of one manifest file. `file` is used only in `rejected` refs. Any YAML error
 * fails the whole file (so that a half-written file never removes objects).
 */
export function parseManifests(text: string, file = 'manifest'): ParseResult {
  const content: ManifestContent = { services: [], namespaces: [], rejected: [], ignored: 0 };
  const label = basename(file);
  let values: unknown[];
  try {
    const documents = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: false });
    if (!Array.isArray(documents)) return { ok: true, content }; // an empty stream
    values = [];
    for (const [index, document] of documents.entries()) {
      const error = document.errors[0];
      if (error) {
        const where = documents.length > 1 ? ` (document ${index + 1})` : '';
        return { ok: false, error: `${error.message.split('\n')[0]}${where}` };
      }
      values.push(document.toJS({ maxAliasCount: 100 }));
    }
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }

  const visit = (value: unknown, where: string, depth: number): void => {
    if (value === null || value === undefined) return; // an empty document
    if (!isRecord(value) || typeof value.kind !== 'string') {
      content.ignored++;
      return;
    }
    const kind = value.kind;
    if (kind.endsWith('List') && Array.isArray(value.items)) {
      if (depth >= MAX_LIST_DEPTH) {
        content.rejected.push({ ref: `${label} ${where}`, error: 'Lists nested too deeply' });
        return;
      }
      for (const [i, item] of value.items.entries()) visit(item, `${where} item ${i + 1}`, depth + 1);
      return;
    }
    if (kind !== 'Service' && kind !== 'Namespace') {
      content.ignored++;
      return;
    }
    const name = metaString(value, 'name');
    const namespace = metaString(value, 'namespace') ?? 'default';
    const ref =
      kind === 'Service' ? `${namespace}/${name ?? '?'} (${label})` : `namespace ${name ?? '?'} (${label})`;
    if (value.apiVersion === undefined) {
      content.rejected.push({ ref, error: `${kind} has no apiVersion (expected v1)` });
      return;
    }
    if (value.apiVersion !== 'v1') {
      content.ignored++; // e.g. a Knative serving.knative.dev/v1 Service
      return;
    }
    if (kind === 'Namespace') {
      const read = readNamespace(value);
      if (read.ok) content.namespaces.push(read.value);
      else content.rejected.push({ ref: `${label} ${where}`, error: read.error });
      return;
    }
    if (name === undefined) {
      content.rejected.push({ ref: `${label} ${where}`, error: 'Service has no metadata.name' });
      return;
    }
    const read = readService(value);
    if (read.ok) content.services.push(read.value);
    else content.rejected.push({ ref, error: read.error });
  };
  for (const [index, value] of values.entries()) visit(value, `document ${index + 1}`, 0);
  return { ok: true, content };
}
