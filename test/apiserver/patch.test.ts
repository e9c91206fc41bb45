// PATCH: the two patch formats (through fast-json-patch and json-merge-patch), the status codes
// of a bad patch, and the resourceVersion precondition, over HTTP.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import { applyJsonPatch, applyMergePatch, JSON_PATCH, MERGE_PATCH, patchedObject } from './patch.ts';
import type { Json } from './resources.ts';
import type { StatusError } from './status.ts';
import { api, b64, patch, tlsSecret } from './wire.ts';

const SECRETS = '/api/v1/namespaces/slipstream-system/secrets';

describe('patch formats', () => {
  it('applies JSON Patches like the apiserver', () => {
    const object = { metadata: { name: 'a', annotations: { 'a/b': '1' } }, spec: { ports: [{ port: 1 }] } };
    const patched = applyJsonPatch(object, [
      { op: 'replace', path: '/metadata/annotations/a~1b', value: '2' },
      { op: 'add', path: '/spec/ports/-', value: { port: 2 } },
      { op: 'remove', path: '/spec/ports/0' },
    ]);
    expect(patched).toEqual({
      metadata: { name: 'a', annotations: { 'a/b': '2' } },
      spec: { ports: [{ port: 2 }] },
    });
    expect(object.spec.ports).toEqual([{ port: 1 }]);
    expect(() => applyJsonPatch(object, [{ op: 'remove', path: '/metadata/nope' }])).toThrow();
  });

  it('applies merge patches per RFC 7386', () => {
    expect(
      applyMergePatch({ a: 1, b: { c: 2, d: 3 }, e: [1] }, { b: { c: null, f: 4 }, e: [2], g: 'x' }),
    ).toEqual({
      a: 1,
      b: { d: 3, f: 4 },
      e: [2],
      g: 'x',
    });
  });

  it('supports every RFC 6902 operation, and names the one that failed', () => {
    const object = { metadata: { name: 'a', labels: { x: '1' } } };
    expect(
      applyJsonPatch(object, [
        { op: 'copy', from: '/metadata/labels/x', path: '/metadata/labels/y' },
        { op: 'move', from: '/metadata/labels/x', path: '/metadata/labels/z' },
      ]),
    ).toEqual({ metadata: { name: 'a', labels: { y: '1', z: '1' } } });
    expect(() => applyJsonPatch(object, [{ op: 'test', path: '/metadata/name', value: 'b' }])).toThrow(
      /^JSON Patch test \/metadata\/name: Test operation failed$/,
    );
    expect(() => applyJsonPatch(object, [{ op: 'replace', path: '', value: 'x' }])).toThrow(/non-object/);
    expect(() => applyJsonPatch(object, { op: 'add' })).toThrow('JSON Patch is not a list');
  });

  it('RFC 7386 appendix A examples', () => {
    const cases: [unknown, unknown, unknown][] = [
      [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
      [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
      [{ a: 'b' }, { a: null }, {}],
      [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
      [
        ['a', 'b'],
        ['c', 'd'],
        ['c', 'd'],
      ],
      [{ a: 'foo' }, null, null],
      [{ e: null }, { a: 1 }, { e: null, a: 1 }],
      [[1, 2], { a: 'b', c: null }, { a: 'b' }],
      [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
    ];
    for (const [target, p, result] of cases) expect(applyMergePatch(target, p)).toEqual(result);
    const target = { a: { b: 1 } };
    const patched = applyMergePatch(target, { a: { c: 2 } }) as Json;
    expect(target).toEqual({ a: { b: 1 } }); // a copy is patched
    expect(patched).toEqual({ a: { b: 1, c: 2 } });
  });

  it('patchedObject answers like kube-apiserver: 415, 400, 422', () => {
    const current = { metadata: { name: 'a' } };
    const code = (contentType: string, raw: string) => {
      try {
        patchedObject(current, contentType, raw);
        return 200;
      } catch (error) {
        return (error as StatusError).code;
      }
    };
    expect(code('application/strategic-merge-patch+json', '{}')).toBe(415);
    expect(code('application/apply-patch+yaml', '{}')).toBe(415);
    expect(code(JSON_PATCH, '{not json')).toBe(400);
    expect(code(JSON_PATCH, '{}')).toBe(400);
    expect(code(MERGE_PATCH, '[]')).toBe(400);
    expect(code(JSON_PATCH, JSON.stringify([{ op: 'remove', path: '/spec' }]))).toBe(422);
    expect(code(MERGE_PATCH, JSON.stringify({ metadata: { labels: { a: 'b' } } }))).toBe(200);
    expect(patchedObject(current, MERGE_PATCH, '{"spec":{"type":"ClusterIP"}}')).toEqual({
      metadata: { name: 'a' },
      spec: { type: 'ClusterIP' },
    });
  });
});

describe('PATCH over HTTP', () => {
  let server: FakeApiServer;
  const admitted: string[] = [];

  beforeEach(async () => {
    admitted.length = 0;
    server = await FakeApiServer.start({
      namespaces: ['default', 'slipstream-system'],
      onAdmit: (request) => {
        admitted.push(request.resource);
        return undefined;
      },
    });
  });

  afterEach(async () => {
    await server.close();
  });

  it('PATCHes Secrets with merge and JSON patches; resourceVersion in the patch is a precondition', async () => {
    const created = await api(server, 'POST', SECRETS, tlsSecret('tls'));
    const rv = (created.body.metadata as Json).resourceVersion;
    const merged = await patch(server, `${SECRETS}/tls`, 'application/merge-patch+json', {
      metadata: { resourceVersion: rv, annotations: { a: '1' } },
      data: { 'ca.crt': b64('ca') },
    });
    expect(merged.status).toBe(200);
    expect(server.secretData('slipstream-system', 'tls')).toEqual({
      'tls.crt': 'cert',
      'tls.key': 'key',
      'ca.crt': 'ca',
    });
    const staleMerge = await patch(server, `${SECRETS}/tls`, 'application/merge-patch+json', {
      metadata: { resourceVersion: rv },
      data: { 'ca.crt': null },
    });
    expect(staleMerge.status).toBe(409);
    expect(staleMerge.body.reason).toBe('Conflict');
    const unconditional = await patch(server, `${SECRETS}/tls`, 'application/merge-patch+json', {
      data: { 'ca.crt': null },
    });
    expect(unconditional.status).toBe(200);
    expect(server.secretData('slipstream-system', 'tls')).toEqual({ 'tls.crt': 'cert', 'tls.key': 'key' });

    const current = (unconditional.body.metadata as Json).resourceVersion;
    const tested = await patch(server, `${SECRETS}/tls`, 'application/json-patch+json', [
      { op: 'test', path: '/metadata/resourceVersion', value: rv },
      { op: 'add', path: '/data/ca.crt', value: b64('ca') },
    ]);
    expect(tested.status).toBe(422);
    expect(tested.body).toMatchObject({ kind: 'Status', reason: 'Invalid', code: 422 });
    const ok = await patch(server, `${SECRETS}/tls`, 'application/json-patch+json', [
      { op: 'test', path: '/metadata/resourceVersion', value: current },
      { op: 'add', path: '/data/ca.crt', value: b64('ca') },
    ]);
    expect(ok.status).toBe(200);
    expect(server.secretData('slipstream-system', 'tls')?.['ca.crt']).toBe('ca');
    const strategic = await patch(server, `${SECRETS}/tls`, 'application/strategic-merge-patch+json', {});
    expect(strategic.status).toBe(415);
    const missing = await patch(server, `${SECRETS}/nope`, 'application/merge-patch+json', {});
    expect(missing.status).toBe(404);
  });
});
