// The client-node helpers against the API server stand-in (test/apiserver): real KubeConfig,
// CoreV1Api and ApiException.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiException, CoreV1Api, PatchStrategy } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from '../../../test/apiserver/fake-apiserver.ts';
import { describeError, loadKubeConfig, requestOptions, type SharedConnection, statusCode } from './kube.ts';

describe('describeError and statusCode', () => {
  it('summarise HTTP errors by their Status, and network errors by their cause', () => {
    expect(describeError(Object.assign(new Error('Unauthorized'), { statusCode: 401 }))).toBe(
      'HTTP 401: Unauthorized',
    );
    expect(
      describeError({ code: 410, body: { message: 'too old' }, message: 'HTTP-Code: 410\nMessage: ...' }),
    ).toBe('HTTP 410: too old');
    expect(
      describeError(new ApiException(500, 'HTTP-Code: 500\nMessage: ...', 'upstream exploded', {})),
    ).toBe('HTTP 500: upstream exploded');
    expect(describeError(new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } }))).toBe(
      'TypeError: fetch failed (ECONNREFUSED)',
    );
    expect(describeError(new Error('boom'))).toBe('boom');
    expect(describeError('plain')).toBe('plain');
    expect(statusCode(new ApiException(409, 'x', '', {}))).toBe(409);
    expect(statusCode({ statusCode: 401 })).toBe(401);
    expect(statusCode(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBeUndefined();
    expect(statusCode(undefined)).toBeUndefined();
  });
});

describe('loadKubeConfig and requestOptions, against the API server stand-in', () => {
  let server: FakeApiServer;
  let dir: string;
  let core: CoreV1Api;

  beforeEach(async () => {
    server = await FakeApiServer.start();
    dir = mkdtempSync(join(tmpdir(), 'slipstream-kube-'));
    core = loadKubeConfig(await server.writeKubeconfig(join(dir, 'kubeconfig'))).makeApiClient(CoreV1Api);
  });

  afterEach(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads a kubeconfig file, and refuses one without a current cluster', () => {
    const empty = join(dir, 'empty');
    writeFileSync(empty, 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n');
    expect(() => loadKubeConfig(empty)).toThrow(`kubeconfig ${empty} has no current cluster`);
  });

  it('a real API error reads as its Status: code, reason and message', async () => {
    const error = await core.readNamespacedSecret({ namespace: 'default', name: 'nope' }).catch((e) => e);
    expect(statusCode(error)).toBe(404);
    expect(describeError(error)).toBe('HTTP 404 NotFound: secrets "nope" not found');
  });

  it('times a request out, and aborts one on its signal', async () => {
    server.beforeHandle = () => new Promise((r) => setTimeout(r, 1000));
    const timedOut = await core.listNamespace({}, requestOptions({ timeoutMs: 100 })).catch((e) => e);
    expect(describeError(timedOut)).toMatch(/TimeoutError|aborted/i);
    const controller = new AbortController();
    const pending = core.listNamespace({}, requestOptions({ signal: controller.signal })).catch((e) => e);
    controller.abort(new Error('stopped'));
    expect(describeError(await pending)).toMatch(/stopped|abort/i);
  });

  it('sets a PATCH content type', async () => {
    await server.createSecret({ metadata: { name: 's', namespace: 'default' }, stringData: { a: '1' } });
    await core.patchNamespacedSecret(
      { namespace: 'default', name: 's', body: { metadata: { labels: { x: 'y' } } } },
      requestOptions({ contentType: PatchStrategy.MergePatch }),
    );
    expect(server.requests.find((r) => r.verb === 'patch')?.contentType).toBe('application/merge-patch+json');
    expect(server.getSecret('default', 's')?.metadata).toMatchObject({ labels: { x: 'y' } });
  });

  it('lets a sequence of requests share a connection pool (client-node alone opens a connection per request)', async () => {
    const ports = async (control: () => Parameters<typeof requestOptions>[0]) => {
      const before = server.requests.length;
      for (let i = 0; i < 6; i++) await core.listNamespace({}, requestOptions(control()));
      return new Set(server.requests.slice(before).map((r) => r.remotePort)).size;
    };
    expect(await ports(() => ({}))).toBe(6);
    const connection: SharedConnection = {};
    expect(await ports(() => ({ connection }))).toBeLessThanOrEqual(2); // undici's pool keeps two
  });
});
