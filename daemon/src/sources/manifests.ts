// The manifests of embedded mode, parsed: one file's text → the core/v1 Services and Namespaces in
// it. A file may hold many YAML documents and `kind: List` (or any `*List` with `items`); other
// kinds and API groups are ignored. Any YAML error fails the whole file, so that a half-written
// file never removes objects.
//
// Parsed by js-yaml, which builds plain values from the parser's events: no document tree with
// source positions, which the `yaml` package builds for every node first (20x the time and most of
// the daemon's start-up garbage with 100,000 Services; RESULTS.md). YAML 1.2 core schema, as
// Kubernetes reads YAML: no timestamps, no merge keys.
//
// What one file may cost is bounded: its size (files.ts), its objects (MAX_OBJECTS), nesting
// (MAX_NESTING) and aliases (MAX_ALIASES); past them the file fails as a whole and its last good
// content is kept. A Service past the per-Service bounds (shared/src/core/bounds.ts: ports,
// annotation bytes) is rejected alone, the file's other objects load.

import { basename } from 'node:path';
import { beyondBounds } from '@slipstream/shared/core/bounds';
import { isRecord } from '@slipstream/shared/core/record';
import {
  internedService,
  type Namespace,
  readNamespace,
  readService,
  type Service,
} from '@slipstream/shared/core/service';
import { loadAll, YAMLException } from 'js-yaml';
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
/** Objects (documents and List items) in one file: 10x what a file of the benchmark holds. */
export const MAX_OBJECTS = 10_000;
/** Collection nesting, as the webhook bounds a review's body. A Service needs 5 levels. */
export const MAX_NESTING = 64;
/** Alias nodes per document (`*ref`); each may stand for a whole subtree. */
export const MAX_ALIASES = 100;

/**
 * A copy with strings of its own. js-yaml's strings are slices of the file's text, and a V8
 * sliced string keeps its whole parent alive: every manifest file's text would stay in the heap
 * for as long as one of its Services does (26 MB with 100,000 Services).
 */
function detached<T>(value: T): T {
  return structuredClone(value);
}

/**
 * One copy of each repeated string (copied out of the file text first): the Services of a file
 * share their namespace, port names and annotations instead of holding a copy each. Per file,
 * so that nothing outlives the Services that use it.
 */
function newInterner(): (text: string) => string {
  const seen = new Map<string, string>();
  return (text) => {
    const known = seen.get(text);
    if (known !== undefined) return known;
    seen.set(text, text);
    return text;
  };
}

/** Which document (1-based) holds `position`: the `---` markers before it, a leading one opening the first. */
function documentAt(text: string, position: number): number {
  const before = text.slice(0, position);
  const markers = before.match(/^---(?=[ \t\r\n]|$)/gm)?.length ?? 0;
  const leading = /^(?:[ \t]*(?:#.*)?\r?\n|%.*\r?\n)*---(?=[ \t\r\n]|$)/.test(text) ? 1 : 0;
  return markers - leading + 1;
}

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
  const intern = newInterner();
  let values: unknown[];
  try {
    values = loadAll(text, { json: true, maxDepth: MAX_NESTING, maxAliases: MAX_ALIASES });
  } catch (error) {
    if (!(error instanceof YAMLException)) {
      return { ok: false, error: error instanceof Error ? error.message : String(error) };
    }
    // The reason and where, not the exception's message: that repeats the source around it.
    const mark = error.mark;
    if (!mark) return { ok: false, error: error.reason };
    const documents = text.match(/^---(?=[ \t\r\n]|$)/gm)?.length ?? 0;
    const where = documents > 0 ? ` (document ${documentAt(text, mark.position)})` : '';
    return {
      ok: false,
      error: `${error.reason} at line ${mark.line + 1}, column ${mark.column + 1}${where}`,
    };
  }
  let objects = 0;

  const visit = (value: unknown, where: string, depth: number): void => {
    if (value === null || value === undefined) return; // an empty document
    objects++;
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
      if (read.ok) content.namespaces.push(detached(read.value));
      else content.rejected.push({ ref: `${label} ${where}`, error: read.error });
      return;
    }
    if (name === undefined) {
      content.rejected.push({ ref: `${label} ${where}`, error: 'Service has no metadata.name' });
      return;
    }
    const beyond = beyondBounds(value);
    if (beyond !== undefined) {
      content.rejected.push({ ref, error: beyond });
      return;
    }
    const read = readService(value);
    if (read.ok) content.services.push(internedService(detached(read.value), intern));
    else content.rejected.push({ ref, error: read.error });
  };
  for (const [index, value] of values.entries()) {
    visit(value, `document ${index + 1}`, 0);
    if (objects > MAX_OBJECTS) {
      return {
        ok: false,
        error: `more than ${MAX_OBJECTS} objects (documents and List items) in one file; split it`,
      };
    }
  }
  return { ok: true, content };
}
