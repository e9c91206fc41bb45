import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MAX_PORTS } from '@slipstream/shared/core/bounds';
import { describe, expect, it } from 'vitest';
import { MAX_ALIASES, MAX_NESTING, MAX_OBJECTS, parseManifests } from './manifests.ts';

const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/manifests/', import.meta.url));
const NAMESPACES = readFileSync(join(FIXTURES, 'namespaces.yaml'), 'utf8');
const SERVICES = readFileSync(join(FIXTURES, 'services.yaml'), 'utf8');
const LIST = readFileSync(join(FIXTURES, 'list.json'), 'utf8');

describe('parseManifests', () => {
  it('reads multi-document YAML, Lists and JSON, ignoring other kinds', () => {
    const yaml = parseManifests(SERVICES, 'services.yaml');
    expect(yaml.ok && yaml.content.services.map((s) => s.name)).toEqual(['postgres', 'dns']);
    expect(yaml.ok && yaml.content.ignored).toBe(1);
    const list = parseManifests(LIST, 'list.json');
    expect(list.ok && list.content.services.map((s) => `${s.namespace}/${s.name}`)).toEqual([
      'cache/redis',
      'legacy/old',
    ]);
    const ns = parseManifests(NAMESPACES);
    expect(ns.ok && ns.content.namespaces).toEqual([
      { name: 'shop', labels: {} },
      { name: 'legacy', labels: { 'slipstream.dev/acceleration': 'disabled' } },
    ]);
    const empty = parseManifests('');
    expect(empty.ok && empty.content.services).toEqual([]);
  });

  it('rejects bad objects with a ref, and ignores other API groups', () => {
    const text = `
apiVersion: v1
kind: Service
metadata: { name: bad, namespace: x }
spec: { ports: [{ port: 99999 }] }
---
kind: Service
metadata: { name: noversion }
---
apiVersion: v1
kind: Service
metadata: { namespace: x }
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: { name: knative }
---
apiVersion: v1
kind: ServiceList
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: nested }
`;
    const result = parseManifests(text, '/dir/mixed.yaml');
    if (!result.ok) throw new Error(result.error);
    expect(result.content.services.map((s) => `${s.namespace}/${s.name}`)).toEqual(['default/nested']);
    expect(result.content.rejected).toEqual([
      { ref: 'x/bad (mixed.yaml)', error: 'spec.ports[0].port is not a port number (1-65535)' },
      { ref: 'default/noversion (mixed.yaml)', error: 'Service has no apiVersion (expected v1)' },
      { ref: 'mixed.yaml document 3', error: 'Service has no metadata.name' },
    ]);
    expect(result.content.ignored).toBe(1);
  });

  it('fails the whole file on a YAML error, naming the document', () => {
    const result = parseManifests('apiVersion: v1\nkind: Service\n---\nmetadata: [unclosed\n', 'x.yaml');
    expect(result.ok).toBe(false);
    expect(!result.ok && result.error).toMatch(/document 2/);
    const leading = parseManifests('---\nkind: A\n---\nkind: B\n---\nmetadata: [unclosed\n', 'x.yaml');
    expect(!leading.ok && leading.error).toMatch(/at line 7, column 1 \(document 3\)$/);
  });

  it('reads YAML as Kubernetes does (1.2 core schema): dates and yes stay strings, duplicate keys take the last', () => {
    const result = parseManifests(
      'apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n  annotations: { since: 2024-01-01, on: yes }\nspec: { clusterIP: 10.96.0.9, ports: [{ port: 80 }] }\n',
    );
    if (!result.ok) throw new Error(result.error);
    expect(result.content.services.map((s) => [s.name, s.annotations])).toEqual([
      ['b', { since: '2024-01-01', on: 'yes' }],
    ]);
  });

  const service = (name: string, ports: number) =>
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'big' },
      spec: {
        clusterIP: '10.96.0.9',
        ports: Array.from({ length: ports }, (_, i) => ({ name: `p${i}`, port: 1000 + i })),
      },
    });

  it('rejects a Service with more ports than MAX_PORTS alone; the rest of the file loads', () => {
    const result = parseManifests(
      [service('huge', MAX_PORTS + 1), service('fine', 2)].join('\n---\n'),
      'big.yaml',
    );
    if (!result.ok) throw new Error(result.error);
    expect(result.content.services.map((s) => s.name)).toEqual(['fine']);
    expect(result.content.rejected).toEqual([
      {
        ref: 'big/huge (big.yaml)',
        error: `Service has ${MAX_PORTS + 1} ports, more than the ${MAX_PORTS} a review evaluates`,
      },
    ]);
    const atBound = parseManifests(service('edge', MAX_PORTS));
    expect(atBound.ok && atBound.content.services).toHaveLength(1);
  });

  it('fails a file of more than MAX_OBJECTS objects, counting List items', () => {
    const item = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'n' } };
    const list = (n: number) =>
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: Array(n).fill(item) });
    expect(parseManifests(list(MAX_OBJECTS - 1)).ok).toBe(true); // the List itself is one object
    const over = parseManifests(list(MAX_OBJECTS), 'many.json');
    expect(over).toEqual({
      ok: false,
      error: `more than ${MAX_OBJECTS} objects (documents and List items) in one file; split it`,
    });
    expect(
      parseManifests(
        Array(MAX_OBJECTS + 1)
          .fill('kind: Other')
          .join('\n---\n'),
      ).ok,
    ).toBe(false);
  });

  it('fails a file nested deeper than MAX_NESTING, or with more than MAX_ALIASES aliases in a document', () => {
    const deep = `${'['.repeat(MAX_NESTING + 1)}${']'.repeat(MAX_NESTING + 1)}`;
    const nested = parseManifests(deep);
    expect(!nested.ok && nested.error).toMatch(/maxDepth \(64\)/);
    expect(parseManifests(`${'['.repeat(MAX_NESTING - 1)}${']'.repeat(MAX_NESTING - 1)}`).ok).toBe(true);
    const aliases = (n: number) => `a: &x [1]\nb: [${Array(n).fill('*x').join(', ')}]\n`;
    expect(parseManifests(aliases(MAX_ALIASES)).ok).toBe(true);
    const many = parseManifests(aliases(MAX_ALIASES + 1));
    expect(!many.ok && many.error).toMatch(/alias/i);
  });
});
