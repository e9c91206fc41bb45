import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseManifests } from './manifests.ts';

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
  });
});
