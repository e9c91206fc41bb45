// The caBundle's view and patch, applied with fast-json-patch the way the API server applies a
// JSON Patch: no API server needed.

import type { V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import fastJsonPatch from 'fast-json-patch';
import { beforeAll, describe, expect, it } from 'vitest';
import { ANNOTATIONS, fingerprints } from './bootstrap-plan.ts';
import { bundlePatch, bundleView, parseSource } from './ca-bundle.ts';
import { createCa } from './certs.ts';

const T0 = Date.parse('2030-01-02T03:04:05.000Z');
let caA: string;
let caB: string;

beforeAll(async () => {
  caA = (await createCa({ name: 'a', validityMs: 86_400_000, now: T0 })).cert;
  caB = (await createCa({ name: 'b', validityMs: 86_400_000, now: T0 })).cert;
});

const b64 = (pem: string) => Buffer.from(pem, 'utf8').toString('base64');

function config(bundles: string[], annotations?: Record<string, string>): V1MutatingWebhookConfiguration {
  return {
    metadata: { name: 'slipstream', resourceVersion: '7', ...(annotations ? { annotations } : {}) },
    webhooks: bundles.map((pem, i) => ({
      name: `hook${i}.slipstream.dev`,
      admissionReviewVersions: ['v1'],
      sideEffects: 'None',
      clientConfig: { caBundle: pem === '' ? undefined : b64(pem) },
    })),
  } as V1MutatingWebhookConfiguration;
}

function apply(c: V1MutatingWebhookConfiguration, ops: unknown[]): V1MutatingWebhookConfiguration {
  return fastJsonPatch.applyPatch(structuredClone(c), ops as fastJsonPatch.Operation[], true, false)
    .newDocument;
}

describe('parseSource', () => {
  it('reads uid/generation, and nothing else', () => {
    expect(parseSource('abc-123/4')).toEqual({ uid: 'abc-123', generation: 4 });
    expect(parseSource('a/b/12')).toEqual({ uid: 'a/b', generation: 12 });
    for (const bad of [undefined, '', 'abc', 'abc/', '/4', 'abc/x']) expect(parseSource(bad)).toBeUndefined();
  });
});

describe('bundleView', () => {
  it('trusts only the CAs that every webhook carries', () => {
    const view = bundleView(
      config([`${caA}${caB}`, caA], {
        [ANNOTATIONS.bundleSince]: '2030-01-02T03:04:05.000Z',
        [ANNOTATIONS.bundleSource]: 'uid-1/3',
      }),
    );
    expect(view.exists).toBe(true);
    expect([...view.trusted]).toEqual([...fingerprints(caA)]);
    expect(view.since).toBe(T0);
    expect(view.source).toEqual({ uid: 'uid-1', generation: 3 });
  });

  it('says "does not exist" for no configuration or one without webhooks', () => {
    expect(bundleView(undefined)).toEqual({ exists: false, trusted: new Set() });
    expect(bundleView(config([]))).toEqual({ exists: false, trusted: new Set() });
  });
});

describe('bundlePatch', () => {
  it('tests the resourceVersion first, then sets every stale caBundle and the annotations', () => {
    const before = config([caB, caA]);
    const patch = bundlePatch(before, caA, { uid: 'uid-1', generation: 2 }, T0);
    if (patch.kind !== 'patch') throw new Error(patch.kind);
    expect(patch.contentChanged).toBe(true);
    expect(patch.ops[0]).toEqual({ op: 'test', path: '/metadata/resourceVersion', value: '7' });
    expect(patch.ops.map((o) => o.path)).toEqual([
      '/metadata/resourceVersion',
      '/webhooks/0/clientConfig/caBundle',
      '/metadata/annotations',
    ]);
    const after = apply(before, patch.ops);
    expect(after.webhooks?.map((w) => w.clientConfig.caBundle)).toEqual([b64(caA), b64(caA)]);
    expect(after.metadata?.annotations).toEqual({
      [ANNOTATIONS.bundleSource]: 'uid-1/2',
      [ANNOTATIONS.bundleSince]: '2030-01-02T03:04:05.000Z',
    });
    // Applied, nothing is left to do.
    expect(bundlePatch(after, caA, { uid: 'uid-1', generation: 2 }, T0 + 1000)).toEqual({ kind: 'none' });
  });

  it('escapes the annotation keys, and keeps `since` when only the source moves on', () => {
    const before = config([caA], {
      other: 'kept',
      [ANNOTATIONS.bundleSource]: 'uid-1/2',
      [ANNOTATIONS.bundleSince]: '2030-01-01T00:00:00.000Z',
    });
    const patch = bundlePatch(before, caA, { uid: 'uid-1', generation: 3 }, T0);
    if (patch.kind !== 'patch') throw new Error(patch.kind);
    expect(patch.contentChanged).toBe(false);
    expect(patch.ops.slice(1).map((o) => o.path)).toEqual(
      [ANNOTATIONS.bundleSource, ANNOTATIONS.bundleSince].map(
        (k) => `/metadata/annotations/${k.replaceAll('~', '~0').replaceAll('/', '~1')}`,
      ),
    );
    expect(apply(before, patch.ops).metadata?.annotations).toEqual({
      other: 'kept',
      [ANNOTATIONS.bundleSource]: 'uid-1/3',
      [ANNOTATIONS.bundleSince]: '2030-01-01T00:00:00.000Z',
    });
  });

  it('leaves a caBundle written from a newer generation of the same Secret alone', () => {
    const newer = config([caB], { [ANNOTATIONS.bundleSource]: 'uid-1/5' });
    expect(bundlePatch(newer, caA, { uid: 'uid-1', generation: 4 }, T0)).toEqual({ kind: 'newer' });
    // Another Secret (re-created: a new uid) is not "newer".
    expect(bundlePatch(newer, caA, { uid: 'uid-2', generation: 1 }, T0).kind).toBe('patch');
  });

  it('fails to apply once someone else wrote (the resourceVersion test)', () => {
    const before = config([caB]);
    const patch = bundlePatch(before, caA, { uid: 'uid-1', generation: 1 }, T0);
    if (patch.kind !== 'patch') throw new Error(patch.kind);
    const moved = { ...before, metadata: { ...before.metadata, resourceVersion: '8' } };
    expect(() => apply(moved, patch.ops)).toThrow(/Test operation failed/);
  });
});
